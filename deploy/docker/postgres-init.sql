-- First start of the compose PostgreSQL: one database for the hub, one for MLflow.
-- The superuser password comes from POSTGRES_PASSWORD (environment, never a file here).
CREATE DATABASE vigil;
CREATE DATABASE mlflow;
