DROP TABLE refresh_writer;
