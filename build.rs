//! Rebuilds the crate when a migration is added or changed: `embed_migrations!` (src/db/mod.rs) reads the
//! `migrations/` folder at compile time, and cargo does not otherwise watch a folder a macro lists.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
