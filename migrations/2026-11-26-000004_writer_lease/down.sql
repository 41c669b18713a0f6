ALTER FUNCTION rollup_capture_tokens_insert() SECURITY INVOKER RESET search_path;
ALTER FUNCTION rollup_capture_tokens_delete() SECURITY INVOKER RESET search_path;
ALTER FUNCTION rollup_capture_tokens_update() SECURITY INVOKER RESET search_path;
ALTER FUNCTION rollup_capture_users_change() SECURITY INVOKER RESET search_path;
ALTER FUNCTION rollup_capture_truncate() SECURITY INVOKER RESET search_path;
DROP TABLE refresh_writer;
