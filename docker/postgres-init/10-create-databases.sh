#!/usr/bin/env bash
# Runs inside the postgres container, once, when its data volume is first initialised
# (/docker-entrypoint-initdb.d; see the postgres image docs). POSTGRES_USER already owns POSTGRES_DB,
# the Airflow metadata database. This adds:
#   mlflow     the MLflow tracking server's backend store, owned by MLFLOW_DB_USER
#   warehouse  the dbt "postgres" target and the demo data (RETRAIN_PG_DBNAME), owned by RETRAIN_PG_USER
# Each owner may create schemas in its database (dbt creates staging/marts, the loader creates raw).
#
# It is a shell script rather than a .sql file only so that role names and passwords come from the
# environment (.env) instead of being written into SQL; the SQL is below. Every statement is guarded,
# so the script can also be re-run by hand against an existing volume:
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-create-databases.sh
# (Scripts here do not run again on an existing volume; `docker compose down -v` starts from scratch.)
set -eo pipefail

: "${POSTGRES_USER:?}" "${MLFLOW_DB_USER:?}" "${MLFLOW_DB_PASSWORD:?}" "${MLFLOW_DB_NAME:?}"
: "${RETRAIN_PG_USER:?}" "${RETRAIN_PG_PASSWORD:?}" "${RETRAIN_PG_DBNAME:?}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB:-${POSTGRES_USER}}" \
    -v mlflow_user="${MLFLOW_DB_USER}" -v mlflow_password="${MLFLOW_DB_PASSWORD}" \
    -v mlflow_db="${MLFLOW_DB_NAME}" \
    -v warehouse_user="${RETRAIN_PG_USER}" -v warehouse_password="${RETRAIN_PG_PASSWORD}" \
    -v warehouse_db="${RETRAIN_PG_DBNAME}" <<'SQL'
-- Roles (a role that already exists, e.g. one equal to POSTGRES_USER, is left as it is).
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'mlflow_user', :'mlflow_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'mlflow_user')
\gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'warehouse_user', :'warehouse_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'warehouse_user')
\gexec

-- Databases (CREATE DATABASE cannot run inside a DO block or transaction, hence \gexec).
SELECT format('CREATE DATABASE %I OWNER %I', :'mlflow_db', :'mlflow_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'mlflow_db')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'warehouse_db', :'warehouse_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'warehouse_db')
\gexec

-- Nobody else connects to them (PUBLIC has CONNECT on new databases by default).
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'mlflow_db')
\gexec
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'warehouse_db')
\gexec
SQL

echo "postgres-init: databases ${MLFLOW_DB_NAME} (owner ${MLFLOW_DB_USER}) and ${RETRAIN_PG_DBNAME} (owner ${RETRAIN_PG_USER}) ready"
