-- ciport's PostgreSQL store: one role that owns one database, and nothing more.
--
-- The gateway creates and migrates its own tables (sessions, audit_events, …, a trigger that
-- keeps audit_events append-only) on start, and uses pg_advisory_xact_lock, pg_notify and
-- LISTEN, which every role may use. So its role needs to own its database's schema and
-- nothing else: no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS. Run it once, as
-- a superuser (or a role with CREATEROLE and CREATEDB), with psql 10 or newer:
--
--   CIPORT_DB_PASSWORD_FILE=./secrets/ciport-db-password \
--     psql -v ON_ERROR_STOP=1 -h DBHOST -U postgres -d postgres -f deploy/postgres/ciport-store.sql
--
-- Optional variables: -v role=NAME (default ciport), -v db=NAME (default ciport). The password
-- is read from the file CIPORT_DB_PASSWORD_FILE names (at least 16 characters), never from
-- argv. The postgres image's /docker-entrypoint-initdb.d runs this file too (deploy/compose.yaml).
\if :{?role}
\else
  \set role ciport
\endif
\if :{?db}
\else
  \set db ciport
\endif
\set password `cat "${CIPORT_DB_PASSWORD_FILE:-/nonexistent}" 2>/dev/null`
SELECT length(:'password') >= 16 AS password_ok \gset
\if :password_ok
\else
  \echo 'ciport-store.sql: CIPORT_DB_PASSWORD_FILE must name a file holding a password of 16 or more characters'
  SELECT 'no password' :: int;
\endif

-- The CREATE ROLE below carries the password in its text: a server that logs statements
-- (log_statement = ddl or all, log_min_duration_statement) would write it to its log in clear.
-- A superuser turns that logging off for this session; any other role is warned.
SELECT rolsuper AS ciport_superuser FROM pg_roles WHERE rolname = current_user \gset
\if :ciport_superuser
  SET log_statement = 'none';
  SET log_min_duration_statement = -1;
\else
  \echo 'ciport-store.sql: not a superuser: if this server logs DDL, the next statement (password included) is in its log; set the password again afterwards with psql \\password'
\endif
CREATE ROLE :"role" LOGIN PASSWORD :'password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
  CONNECTION LIMIT 100;
\unset password
\if :ciport_superuser
  RESET log_statement;
  RESET log_min_duration_statement;
\endif
CREATE DATABASE :"db" OWNER :"role";
-- Nobody else connects to it or creates temporary tables in it.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;

\connect :"db"
-- PostgreSQL 15+: public belongs to pg_database_owner (the role above) and only it may create
-- there. Older servers let every role create in public: give the schema to the store's role and
-- take CREATE back from everyone else.
ALTER SCHEMA public OWNER TO :"role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
