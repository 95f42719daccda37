// A real OpenID provider for GrantGate's sign-in tests: panva/node-oidc-provider (OpenID Certified),
// with its development login page (any login, any password). Run: PORT=... node provider.mjs
//
// The tests set it up over a small side door, since the relying party's address is known only later:
//   POST /__test/setup   {"clients": [...client metadata], "accounts": {"dana": ["ml", "eng"]}}
//   POST /__test/rotate  a new signing key replaces the old one (the JWKS publishes only the new one)
// Each call builds a fresh provider (its sessions are in memory, so everyone signs in again).
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
let keys = [signingKey()];
let setup = { clients: [], accounts: {} };
let provider = build();

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

function build() {
  return new Provider(issuer, {
    clients: setup.clients,
    jwks: { keys },
    cookies: { keys: [randomUUID()] },
    // `sub` is an opaque id and differs from the login name, so a test sees which claim named it.
    findAccount: (_ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: `id-${id}`, preferred_username: id, groups: setup.accounts[id] ?? [] }),
    }),
    claims: { openid: ['sub'], profile: ['preferred_username', 'groups'] },
    // The profile claims in the ID token itself, not only at the userinfo endpoint.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    // A first-party client: consent is implied, as a company's provider configures its own apps.
    loadExistingGrant: async (ctx) => {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid profile email');
      await grant.save();
      return grant;
    },
  });
}

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

http.createServer(async (req, res) => {
  if (req.method === 'POST' && req.url === '/__test/setup') {
    setup = await body(req);
    provider = build();
  } else if (req.method === 'POST' && req.url === '/__test/rotate') {
    keys = [signingKey()];
    provider = build();
  } else {
    provider.callback()(req, res);
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kids: keys.map((k) => k.kid) }));
}).listen(port, '127.0.0.1', () => console.log(`oidc-provider ready at ${issuer}`));
