// A pushed identity (IdentityStore.pushed, fed by SDS): parts arrive one at a time or
// together, are checked as files are, and a refused part leaves the identity held serving.
import t from 'tap';
import { DevCa, IdentityStore, Logger } from '@remora/proxy';

const ca = await DevCa.create();
const otherCa = await DevCa.create();

function pushedStore(): { store: IdentityStore; lines: string[] } {
  const lines: string[] = [];
  const store = IdentityStore.pushed(new Logger('secret', 'debug', (l) => lines.push(l.trimEnd())));
  return { store, lines };
}

t.test('the roots first, then the certificate: served once both are in, with one change event', async (t) => {
  const { store, lines } = pushedStore();
  t.teardown(() => store.close());
  const changes: (string | null)[] = [];
  store.onChange((id) => changes.push(id?.serial ?? null));
  const id = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  t.equal(store.update({ rootsPem: ca.rootCertPem }, 'SDS test'), null, 'the roots are taken');
  t.equal(store.current, null, 'no identity with the roots alone');
  t.equal(store.secureContext, null);
  t.equal(store.update({ certChainPem: id.certChainPem, keyPem: id.keyPem }, 'SDS test'), null, 'the certificate is taken');
  t.equal(store.current?.serial, id.serial);
  t.equal(store.current?.principal, 'cluster.local/ns/shop/sa/cart');
  t.ok(store.secureContext !== null, 'a secure context is built');
  t.same(changes, [id.serial], 'listeners hear of it once');
  t.equal(store.update({ certChainPem: id.certChainPem, keyPem: id.keyPem, rootsPem: ca.rootCertPem }, 'SDS test'), null, 'the same parts again');
  t.same(changes, [id.serial], 'change nothing');
  t.ok(lines.some((l) => l.includes('workload identity spiffe://cluster.local/ns/shop/sa/cart') && l.includes('from SDS test')));
});

t.test('refused parts: the reason names the part; the identity held stays', async (t) => {
  const { store, lines } = pushedStore();
  t.teardown(() => store.close());
  const id = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  const other = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  store.update({ certChainPem: id.certChainPem, keyPem: id.keyPem, rootsPem: ca.rootCertPem }, 'SDS test');
  const names = { certChain: 'Secret default: tlsCertificate.certificateChain', key: 'Secret default: tlsCertificate.privateKey', rootCert: 'Secret ROOTCA: validationContext.trustedCa' };
  t.match(store.update({ certChainPem: id.certChainPem, keyPem: other.keyPem }, 'SDS test', names), /private key does not match the certificate/);
  t.match(store.update({ certChainPem: id.certChainPem }, 'SDS test', names), /Secret default: tlsCertificate\.privateKey is missing/);
  t.match(store.update({ certChainPem: 'garbage', keyPem: id.keyPem }, 'SDS test', names), /Secret default: tlsCertificate\.certificateChain holds no certificate/);
  t.match(store.update({ rootsPem: '' }, 'SDS test', names), /Secret ROOTCA: validationContext\.trustedCa holds no certificate/);
  const expired = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart', notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
  t.match(store.update({ certChainPem: expired.certChainPem, keyPem: expired.keyPem }, 'SDS test', names), /expired at/);
  const noSpiffe = await ca.issueServer({ dnsNames: ['a.example'] });
  t.match(store.update({ certChainPem: noSpiffe.certChainPem, keyPem: noSpiffe.keyPem }, 'SDS test', names), /no spiffe:\/\/ URI SAN/);
  t.equal(store.current?.serial, id.serial, 'the identity held is unchanged');
  t.ok(lines.filter((l) => l.includes('[error]') && l.includes(`keeping serial ${id.serial}`)).length >= 6, 'each refusal is logged with what is kept');
});

t.test('a certificate that does not chain to the roots held is served with a warning, as Envoy would', async (t) => {
  const { store, lines } = pushedStore();
  t.teardown(() => store.close());
  const id = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  t.equal(store.update({ certChainPem: id.certChainPem, keyPem: id.keyPem, rootsPem: otherCa.rootCertPem }, 'SDS test'), null);
  t.equal(store.current?.serial, id.serial);
  t.ok(lines.some((l) => l.includes('[warn') && l.includes('does not verify against the roots held')), 'the mismatch is logged');
  // The roots catch up (a root rotation pushed after the certificate).
  t.equal(store.update({ rootsPem: ca.rootCertPem }, 'SDS test'), null);
  t.equal(store.current?.rootsPem, ca.rootCertPem, 'the new roots are served');
});

t.test('a file store does not take pushes; a pushed store reads no files', async (t) => {
  const { store } = pushedStore();
  t.teardown(() => store.close());
  await store.reload();
  t.equal(store.current, null, 'reload reads nothing');
  const files = await IdentityStore.open({ dir: '/nonexistent-remora-certs' }, new Logger('secret', 'off', () => {}));
  t.teardown(() => files.close());
  t.throws(() => files.update({ rootsPem: ca.rootCertPem }, 'x'), /reads files/);
});
