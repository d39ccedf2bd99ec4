#!/bin/sh
# The billing service's own PostgreSQL role: it logs in with BILLING_DB_PASSWORD, is no
# superuser, and owns the service's database (POSTGRES_DB), which is what `billing migrate`
# needs to create and change the schema (since PostgreSQL 15 the database's owner also owns
# its public schema).
#
# docker-compose.yml mounts this directory into the postgres container's
# /docker-entrypoint-initdb.d, so the image runs it, as the superuser, when it creates its data
# directory. It can be run again at any time (same role, new password):
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-billing-role.sh
set -eu

: "${BILLING_DB_PASSWORD:?set BILLING_DB_PASSWORD to the password of the service's role}"

# psql's :'name' and :"name" quote the values as a literal and an identifier.
psql -v ON_ERROR_STOP=1 --no-psqlrc \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-billing}" \
  -v role="${BILLING_DB_USER:-billing}" \
  -v password="$BILLING_DB_PASSWORD" \
  -v database="${POSTGRES_DB:-billing}" <<'SQL'
SELECT format('CREATE ROLE %I', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
ALTER DATABASE :"database" OWNER TO :"role";
SQL
