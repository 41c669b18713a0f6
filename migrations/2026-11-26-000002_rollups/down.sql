DROP TABLE refresh_runs;
DROP TABLE user_visits_rollup;
DROP TABLE daily_usage_rollup;
