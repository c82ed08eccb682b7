-- A wardgate database made by the migrations as they were before the chain became linear
-- (commit 549f7803b0db: four Alembic heads), with a row in every table. pg_dump 15 --inserts.
CREATE TABLE public.alembic_version (
    version_num character varying(32) NOT NULL
);
CREATE TABLE public.api_keys (
    id character varying(36) NOT NULL,
    user_id character varying(36) NOT NULL,
    name character varying(64) NOT NULL,
    prefix character varying(16) NOT NULL,
    key_hash character varying(64) NOT NULL,
    session_stamp character varying(64) NOT NULL,
    upstreams text,
    paths text,
    rate_limit character varying(32),
    created_at bigint NOT NULL,
    expires_at bigint,
    last_used_at bigint
);
CREATE TABLE public.app_state (
    key character varying(64) NOT NULL,
    value text NOT NULL
);
CREATE TABLE public.audit_events (
    id integer NOT NULL,
    at bigint NOT NULL,
    event character varying(64) NOT NULL,
    outcome character varying(16) NOT NULL,
    actor character varying(320),
    subject character varying(320),
    ip character varying(64),
    user_agent character varying(512),
    detail character varying(512)
);
CREATE SEQUENCE public.audit_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.audit_events_id_seq OWNED BY public.audit_events.id;
CREATE TABLE public.auth_changes (
    id integer NOT NULL,
    at bigint NOT NULL,
    kind character varying(16) NOT NULL,
    user_id character varying(36) NOT NULL,
    session_id character varying(36),
    expires_at bigint
);
CREATE SEQUENCE public.auth_changes_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.auth_changes_id_seq OWNED BY public.auth_changes.id;
CREATE TABLE public.auth_sessions (
    id character varying(36) NOT NULL,
    user_id character varying(36) NOT NULL,
    auth_method character varying(32) NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    last_seen_at bigint NOT NULL,
    ip character varying(64),
    user_agent character varying(512),
    revoked_at bigint
);
CREATE TABLE public.oauth_identities (
    id character varying(36) NOT NULL,
    provider character varying(32) NOT NULL,
    issuer character varying(512) NOT NULL,
    subject character varying(255) NOT NULL,
    user_id character varying(36) NOT NULL,
    email character varying(320),
    email_verified boolean NOT NULL,
    created_at bigint NOT NULL,
    last_login_at bigint NOT NULL
);
CREATE TABLE public.oauth_state_uses (
    id character varying(64) NOT NULL,
    expires_at bigint NOT NULL
);
CREATE TABLE public.oauth_tokens (
    session_id character varying(36) NOT NULL,
    user_id character varying(36) NOT NULL,
    provider character varying(32) NOT NULL,
    ciphertext text NOT NULL,
    expires_at bigint,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE TABLE public.user_groups (
    user_id character varying(36) NOT NULL,
    name character varying(255) NOT NULL
);
CREATE TABLE public.users (
    id character varying(36) NOT NULL,
    email character varying(320) NOT NULL,
    name character varying(255) NOT NULL,
    role character varying(16) NOT NULL,
    active boolean NOT NULL,
    password_hash text,
    session_stamp character varying(64) NOT NULL,
    profile_image_url character varying(512) NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    last_active_at bigint
);
ALTER TABLE ONLY public.audit_events ALTER COLUMN id SET DEFAULT nextval('public.audit_events_id_seq'::regclass);
ALTER TABLE ONLY public.auth_changes ALTER COLUMN id SET DEFAULT nextval('public.auth_changes_id_seq'::regclass);
INSERT INTO public.alembic_version VALUES ('0005_admin_lock');
INSERT INTO public.alembic_version VALUES ('0004_api_keys');
INSERT INTO public.alembic_version VALUES ('0002_oauth');
INSERT INTO public.alembic_version VALUES ('0002_audit');
INSERT INTO public.api_keys VALUES ('03a41803-ae74-41b0-933b-8af2b58af255', '0984e457-e5d4-44b6-8617-e74de16987d4', 'ci', 'sk-c8d8139b', 'b962be9de4fff244f7642da1b129f83429ffafc4782aae8bb2f8085a3ae1079d', 'Mi0L6UM5bOmw4xQCXQcitQ', 'ollama', NULL, '60/1m', 1796480668, NULL, NULL);
INSERT INTO public.app_state VALUES ('admin_lock', '');
INSERT INTO public.app_state VALUES ('first_admin', 'ada@example.com');
INSERT INTO public.audit_events VALUES (1, 1796480668, 'user.created', 'success', NULL, 'ada@example.com', NULL, NULL, 'role=admin');
INSERT INTO public.audit_events VALUES (2, 1796480668, 'auth.signup', 'success', NULL, 'ada@example.com', NULL, NULL, NULL);
INSERT INTO public.audit_events VALUES (3, 1796480668, 'user.created', 'success', NULL, 'bob@example.com', NULL, NULL, 'role=pending');
INSERT INTO public.audit_events VALUES (4, 1796480668, 'auth.signup', 'success', NULL, 'bob@example.com', NULL, NULL, NULL);
INSERT INTO public.audit_events VALUES (5, 1796480668, 'auth.signin', 'success', NULL, 'ada@example.com', NULL, NULL, NULL);
INSERT INTO public.audit_events VALUES (6, 1796480668, 'auth.session_revoked', 'success', 'bob@example.com', 'bob@example.com', NULL, NULL, 'session=b2828746');
INSERT INTO public.audit_events VALUES (7, 1796480668, 'api_key.created', 'success', 'ada@example.com', 'ada@example.com', NULL, NULL, 'key=03a41803-ae74-41b0-933b-8af2b58af255 prefix=sk-c8d8139b');
INSERT INTO public.audit_events VALUES (8, 1796480668, 'config.warning', 'failure', 'wardgate', NULL, NULL, NULL, 'fixture');
INSERT INTO public.auth_changes VALUES (1, 1796480668, 'user', '0984e457-e5d4-44b6-8617-e74de16987d4', NULL, NULL);
INSERT INTO public.auth_changes VALUES (2, 1796480668, 'user', 'b7662253-c37f-44f0-9305-72ffbb2db092', NULL, NULL);
INSERT INTO public.auth_changes VALUES (3, 1796480668, 'session', 'b7662253-c37f-44f0-9305-72ffbb2db092', 'b2828746-01ec-4cad-aab9-ab4fb794c4a0', 1797085468);
INSERT INTO public.auth_changes VALUES (4, 1796480668, 'api_key', '0984e457-e5d4-44b6-8617-e74de16987d4', '03a41803-ae74-41b0-933b-8af2b58af255', NULL);
INSERT INTO public.auth_sessions VALUES ('3b878d5c-c78f-4496-a75f-d896d262c6f6', '0984e457-e5d4-44b6-8617-e74de16987d4', 'password', 1796480668, 1797085468, 1796480668, '127.0.0.1', 'pytest', NULL);
INSERT INTO public.auth_sessions VALUES ('4fcadf4e-00d6-4e88-89db-44ebdbd92920', '0984e457-e5d4-44b6-8617-e74de16987d4', 'password', 1796480668, 1797085468, 1796480668, '10.0.0.1', 'curl/8', NULL);
INSERT INTO public.auth_sessions VALUES ('b2828746-01ec-4cad-aab9-ab4fb794c4a0', 'b7662253-c37f-44f0-9305-72ffbb2db092', 'password', 1796480668, 1797085468, 1796480668, '127.0.0.1', 'pytest', 1796480668);
INSERT INTO public.oauth_identities VALUES ('5d3c2a4e-0000-4000-8000-000000000001', 'oidc', 'https://idp.example.com', 'sub-1', '0984e457-e5d4-44b6-8617-e74de16987d4', 'ada@example.com', true, 1796480668, 1796480668);
INSERT INTO public.oauth_state_uses VALUES ('state-1', 1796481268);
INSERT INTO public.user_groups VALUES ('0984e457-e5d4-44b6-8617-e74de16987d4', 'ai-users');
INSERT INTO public.users VALUES ('0984e457-e5d4-44b6-8617-e74de16987d4', 'ada@example.com', 'Ada Admin', 'admin', true, '$argon2id$v=19$m=19456,t=2,p=1$BuEt7Z9QvPO2cZLDrGyUUQ$TqJsXMBZE+vH6lYrsgqzVHrWo7gkY7n3B+WtXvAFAq0', 'Mi0L6UM5bOmw4xQCXQcitQ', '/user.png', 1796480668, 1796480668, NULL);
INSERT INTO public.users VALUES ('b7662253-c37f-44f0-9305-72ffbb2db092', 'bob@example.com', 'Bob', 'pending', true, '$argon2id$v=19$m=19456,t=2,p=1$dH7VJSqL5pLGXSozHta8Dw$AHYw4gdNkbUnj2L+eUisCU0e/CfcQxT9ZDyeVEZBjG8', 'X8yvVXy19iCPbzb5BNYPoQ', '/user.png', 1796480668, 1796480668, NULL);
SELECT pg_catalog.setval('public.audit_events_id_seq', 8, true);
SELECT pg_catalog.setval('public.auth_changes_id_seq', 4, true);
ALTER TABLE ONLY public.alembic_version
    ADD CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num);
ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash);
ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.app_state
    ADD CONSTRAINT app_state_pkey PRIMARY KEY (key);
ALTER TABLE ONLY public.audit_events
    ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.auth_changes
    ADD CONSTRAINT auth_changes_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.auth_sessions
    ADD CONSTRAINT auth_sessions_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.oauth_identities
    ADD CONSTRAINT oauth_identities_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.oauth_state_uses
    ADD CONSTRAINT oauth_state_uses_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT oauth_tokens_pkey PRIMARY KEY (session_id);
ALTER TABLE ONLY public.oauth_identities
    ADD CONSTRAINT uq_oauth_identities_issuer_subject UNIQUE (issuer, subject);
ALTER TABLE ONLY public.user_groups
    ADD CONSTRAINT user_groups_pkey PRIMARY KEY (user_id, name);
ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_email_key UNIQUE (email);
ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);
CREATE INDEX ix_api_keys_user ON public.api_keys USING btree (user_id);
CREATE INDEX ix_audit_events_at ON public.audit_events USING btree (at);
CREATE INDEX ix_audit_events_event ON public.audit_events USING btree (event);
CREATE INDEX ix_auth_changes_at ON public.auth_changes USING btree (at);
CREATE INDEX ix_auth_sessions_revoked ON public.auth_sessions USING btree (revoked_at);
CREATE INDEX ix_auth_sessions_user ON public.auth_sessions USING btree (user_id);
CREATE INDEX ix_oauth_identities_user ON public.oauth_identities USING btree (user_id);
CREATE INDEX ix_oauth_state_uses_expires ON public.oauth_state_uses USING btree (expires_at);
CREATE INDEX ix_oauth_tokens_user ON public.oauth_tokens USING btree (user_id);
ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;
ALTER TABLE ONLY public.auth_sessions
    ADD CONSTRAINT auth_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;
ALTER TABLE ONLY public.oauth_identities
    ADD CONSTRAINT oauth_identities_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;
ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT oauth_tokens_session_id_fkey FOREIGN KEY (session_id) REFERENCES public.auth_sessions(id) ON DELETE CASCADE;
ALTER TABLE ONLY public.oauth_tokens
    ADD CONSTRAINT oauth_tokens_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;
ALTER TABLE ONLY public.user_groups
    ADD CONSTRAINT user_groups_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;
