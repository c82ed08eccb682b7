-- A wardgate database made by the migrations as they were before the chain became linear
-- (commit 549f7803b0db: four Alembic heads), with a row in every table. sqlite3 .dump.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version VALUES('0005_admin_lock');
INSERT INTO alembic_version VALUES('0004_api_keys');
INSERT INTO alembic_version VALUES('0002_oauth');
INSERT INTO alembic_version VALUES('0002_audit');
CREATE TABLE app_state (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO app_state VALUES('admin_lock','');
INSERT INTO app_state VALUES('first_admin','ada@example.com');
CREATE TABLE auth_changes (
	id INTEGER NOT NULL, 
	at BIGINT NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	user_id VARCHAR(36) NOT NULL, 
	session_id VARCHAR(36), 
	expires_at BIGINT, 
	PRIMARY KEY (id)
);
INSERT INTO auth_changes VALUES(1,1796480666,'user','9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464',NULL,NULL);
INSERT INTO auth_changes VALUES(2,1796480666,'user','16fed5fb-196d-45ad-88e4-0395c017f9c0',NULL,NULL);
INSERT INTO auth_changes VALUES(3,1796480666,'session','16fed5fb-196d-45ad-88e4-0395c017f9c0','bbc8bd06-857b-4a89-82b6-6cf10f8845c3',1797085466);
INSERT INTO auth_changes VALUES(4,1796480666,'api_key','9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464','89a7f6da-ad89-4631-85a8-8092337244c0',NULL);
CREATE TABLE users (
	id VARCHAR(36) NOT NULL, 
	email VARCHAR(320) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	active BOOLEAN NOT NULL, 
	password_hash TEXT, 
	session_stamp VARCHAR(64) NOT NULL, 
	profile_image_url VARCHAR(512) NOT NULL, 
	created_at BIGINT NOT NULL, 
	updated_at BIGINT NOT NULL, 
	last_active_at BIGINT, 
	PRIMARY KEY (id), 
	UNIQUE (email)
);
INSERT INTO users VALUES('9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464','ada@example.com','Ada Admin','admin',1,'$argon2id$v=19$m=19456,t=2,p=1$RwEkXLT2Xd7o5oxYZ5NwpQ$83js2o5Qsm4A5HXQWbi7vbIsaTHlHXNax2N/GTSsIB8','4wKCHsWz3jaQ7HpGZJlIPg','/user.png',1796480666,1796480666,NULL);
INSERT INTO users VALUES('16fed5fb-196d-45ad-88e4-0395c017f9c0','bob@example.com','Bob','pending',1,'$argon2id$v=19$m=19456,t=2,p=1$5liHjJSy5sWWnSdNtu+F1w$Q3cOwkfRDmLuTaIPUAeW5BBcp+2U+q3KVzEu2tIJpY0','zD-k38ULxRgc8Rj3tCjYGA','/user.png',1796480666,1796480666,NULL);
CREATE TABLE auth_sessions (
	id VARCHAR(36) NOT NULL, 
	user_id VARCHAR(36) NOT NULL, 
	auth_method VARCHAR(32) NOT NULL, 
	created_at BIGINT NOT NULL, 
	expires_at BIGINT, 
	last_seen_at BIGINT NOT NULL, 
	ip VARCHAR(64), 
	user_agent VARCHAR(512), 
	revoked_at BIGINT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
INSERT INTO auth_sessions VALUES('e64c4d1f-9032-4125-b55a-7269ddeb9b17','9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464','password',1796480666,1797085466,1796480666,'127.0.0.1','pytest',NULL);
INSERT INTO auth_sessions VALUES('bbc8bd06-857b-4a89-82b6-6cf10f8845c3','16fed5fb-196d-45ad-88e4-0395c017f9c0','password',1796480666,1797085466,1796480666,'127.0.0.1','pytest',1796480666);
INSERT INTO auth_sessions VALUES('29ba4d27-690d-4eb1-b505-e97b86926ba0','9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464','password',1796480666,1797085466,1796480666,'10.0.0.1','curl/8',NULL);
CREATE TABLE api_keys (
	id VARCHAR(36) NOT NULL, 
	user_id VARCHAR(36) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	prefix VARCHAR(16) NOT NULL, 
	key_hash VARCHAR(64) NOT NULL, 
	session_stamp VARCHAR(64) NOT NULL, 
	upstreams TEXT, 
	paths TEXT, 
	rate_limit VARCHAR(32), 
	created_at BIGINT NOT NULL, 
	expires_at BIGINT, 
	last_used_at BIGINT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE, 
	UNIQUE (key_hash)
);
INSERT INTO api_keys VALUES('89a7f6da-ad89-4631-85a8-8092337244c0','9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464','ci','sk-7e98859d','a1e87872ef87fed11553db53e7bd147298ac43ac75fd2d24f33ac47407337a1d','4wKCHsWz3jaQ7HpGZJlIPg','ollama',NULL,'60/1m',1796480666,NULL,NULL);
CREATE TABLE oauth_identities (
	id VARCHAR(36) NOT NULL, 
	provider VARCHAR(32) NOT NULL, 
	issuer VARCHAR(512) NOT NULL, 
	subject VARCHAR(255) NOT NULL, 
	user_id VARCHAR(36) NOT NULL, 
	email VARCHAR(320), 
	email_verified BOOLEAN NOT NULL, 
	created_at BIGINT NOT NULL, 
	last_login_at BIGINT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE, 
	CONSTRAINT uq_oauth_identities_issuer_subject UNIQUE (issuer, subject)
);
INSERT INTO oauth_identities VALUES('5d3c2a4e-0000-4000-8000-000000000001','oidc','https://idp.example.com','sub-1','9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464','ada@example.com',1,1796480666,1796480666);
CREATE TABLE oauth_tokens (
	session_id VARCHAR(36) NOT NULL, 
	user_id VARCHAR(36) NOT NULL, 
	provider VARCHAR(32) NOT NULL, 
	ciphertext TEXT NOT NULL, 
	expires_at BIGINT, 
	created_at BIGINT NOT NULL, 
	updated_at BIGINT NOT NULL, 
	PRIMARY KEY (session_id), 
	FOREIGN KEY(session_id) REFERENCES auth_sessions (id) ON DELETE CASCADE, 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE TABLE user_groups (
	user_id VARCHAR(36) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	PRIMARY KEY (user_id, name), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
INSERT INTO user_groups VALUES('9dbeb771-7bfc-44b0-8ec9-03d8f3bc2464','ai-users');
CREATE TABLE oauth_state_uses (
	id VARCHAR(64) NOT NULL, 
	expires_at BIGINT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO oauth_state_uses VALUES('state-1',1796481266);
CREATE TABLE audit_events (
	id INTEGER NOT NULL, 
	at BIGINT NOT NULL, 
	event VARCHAR(64) NOT NULL, 
	outcome VARCHAR(16) NOT NULL, 
	actor VARCHAR(320), 
	subject VARCHAR(320), 
	ip VARCHAR(64), 
	user_agent VARCHAR(512), 
	detail VARCHAR(512), 
	PRIMARY KEY (id)
);
INSERT INTO audit_events VALUES(1,1796480666,'user.created','success',NULL,'ada@example.com',NULL,NULL,'role=admin');
INSERT INTO audit_events VALUES(2,1796480666,'auth.signup','success',NULL,'ada@example.com',NULL,NULL,NULL);
INSERT INTO audit_events VALUES(3,1796480666,'user.created','success',NULL,'bob@example.com',NULL,NULL,'role=pending');
INSERT INTO audit_events VALUES(4,1796480666,'auth.signup','success',NULL,'bob@example.com',NULL,NULL,NULL);
INSERT INTO audit_events VALUES(5,1796480666,'auth.signin','success',NULL,'ada@example.com',NULL,NULL,NULL);
INSERT INTO audit_events VALUES(6,1796480666,'auth.session_revoked','success','bob@example.com','bob@example.com',NULL,NULL,'session=bbc8bd06');
INSERT INTO audit_events VALUES(7,1796480666,'api_key.created','success','ada@example.com','ada@example.com',NULL,NULL,'key=89a7f6da-ad89-4631-85a8-8092337244c0 prefix=sk-7e98859d');
INSERT INTO audit_events VALUES(8,1796480666,'config.warning','failure','wardgate',NULL,NULL,NULL,'fixture');
CREATE INDEX ix_auth_changes_at ON auth_changes (at);
CREATE INDEX ix_auth_sessions_revoked ON auth_sessions (revoked_at);
CREATE INDEX ix_auth_sessions_user ON auth_sessions (user_id);
CREATE INDEX ix_api_keys_user ON api_keys (user_id);
CREATE INDEX ix_oauth_identities_user ON oauth_identities (user_id);
CREATE INDEX ix_oauth_tokens_user ON oauth_tokens (user_id);
CREATE INDEX ix_oauth_state_uses_expires ON oauth_state_uses (expires_at);
CREATE INDEX ix_audit_events_at ON audit_events (at);
CREATE INDEX ix_audit_events_event ON audit_events (event);
COMMIT;
