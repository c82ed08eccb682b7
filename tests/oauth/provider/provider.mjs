// A real OpenID Connect provider for wardgate's end-to-end tests (panva/oidc-provider).
//
// Started by tests/oauth/conftest.py as `node provider.mjs` with PORT, REDIRECT_URIS and
// POST_LOGOUT_REDIRECT_URIS (comma-separated), and optionally BACKCHANNEL_LOGOUT_URI, in the environment; prints "ready <issuer>" once it
// listens. devInteractions accepts any password: the login name picks one of the ACCOUNTS below.
// Claims are released by scope only (the `groups` claim only when the `groups` scope is granted), as
// Okta, Keycloak and authentik do. Tests change an account with `PUT /test/accounts/<login>` (JSON
// claims), e.g. to move a person out of a group at the provider.
import Provider from "oidc-provider";

const port = Number(process.env.PORT ?? 3000);
const issuer = `http://127.0.0.1:${port}`;
const list = (name) => (process.env[name] ?? "").split(",").filter(Boolean);

// Test accounts: verified and unverified emails, roles and groups (flat, nested, delimited).
const ACCOUNTS = {
  alice: { email: "alice@example.test", email_verified: true, name: "Alice Admin",
           groups: ["staff", "engineering"], realm_access: { roles: ["wardgate-admin", "offline"] } },
  bob: { email: "bob@example.test", email_verified: false, name: "Bob Unverified", groups: ["staff"] },
  carol: { email: "carol@elsewhere.test", email_verified: true, name: "Carol Elsewhere", groups: [] },
  mallory: { email: "mallory@example.test", email_verified: true, name: "Mallory",
             groups: ["staff", "contractors-blocked"] },
  dave: { email: "dave@example.test", email_verified: true, name: "Dave", roles: "viewer,wardgate-user",
          groups: "staff;engineering" },
  // No groups attribute at all: the claim is missing even when the groups scope is granted.
  erin: { email: "erin@example.test", email_verified: true, name: "Erin" },
  frank: { email: "frank@example.test", email_verified: true, name: "Frank", groups: ["ai-users"] },
  karl: { email: "karl@example.test", email_verified: true, name: "Karl", groups: [] },
  // Addresses that fold to karl@example.test: U+212A KELVIN SIGN lower-cases to "k"; full-width
  // letters map to ASCII under IDNA (UTS #46).
  kelvin: { email: "\u212Aarl@example.test", email_verified: true, name: "Kelvin", groups: [] },
  // Claims a Microsoft-only name that vouches for an address at Entra ID; here it proves nothing.
  mallet: { email: "mallet@example.test", email_verified: false, xms_edov: true, name: "Mallet",
            groups: [] },
  wide: { email: "karl@\uFF45\uFF58\uFF41\uFF4D\uFF50\uFF4C\uFF45.test", email_verified: true,
          name: "Wide", groups: [] },
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "wardgate",
      client_secret: "wardgate-test-secret",
      redirect_uris: list("REDIRECT_URIS"),
      post_logout_redirect_uris: list("POST_LOGOUT_REDIRECT_URIS"),
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      // Back-Channel Logout 1.0: told of every session that ends here, by sid (when set).
      ...(process.env.BACKCHANNEL_LOGOUT_URI
        ? { backchannel_logout_uri: process.env.BACKCHANNEL_LOGOUT_URI,
            backchannel_logout_session_required: true }
        : {}),
    },
  ],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified", "xms_edov"],
    profile: ["name"],
    groups: ["groups"],
    roles: ["roles", "realm_access"],
  },
  scopes: ["openid", "email", "profile", "groups", "roles", "offline_access"],
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed("refresh_token"),
  findAccount: async (ctx, id) => ({
    accountId: id,
    async claims() {
      const known = ACCOUNTS[id] ?? { email: `${id}@example.test`, email_verified: true, name: id };
      return { sub: id, ...known };
    },
  }),
  cookies: { keys: ["wardgate-tests-only-cookie-key"] },
  // Back-channel logouts go to wardgate on loopback, which the provider's SSRF protection (a
  // dispatcher refusing special-use addresses) would stop: a test-only provider on loopback.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});

// Test-only: replace an account's claims (the provider runs on loopback for one test session).
provider.use(async (ctx, next) => {
  const match = /^\/test\/accounts\/([\w-]+)$/.exec(ctx.path);
  if (!match || ctx.method !== "PUT") return next();
  let body = "";
  for await (const chunk of ctx.req) body += chunk;
  ACCOUNTS[match[1]] = JSON.parse(body);
  ctx.status = 204;
});

// Failed back-channel deliveries are logged (stderr), or a refusal by wardgate would go unseen.
provider.on("backchannel.error", (ctx, err) => console.error(`backchannel.error ${err.message}`));

provider.listen(port, "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
