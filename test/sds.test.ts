// The workload identity over SDS, as Envoy takes it from Istio's agent: a sidecar started with
// --sds-address on the agent's Unix socket asks SecretDiscoveryService/StreamSecrets for
// `default` and `ROOTCA` and its STRICT inbound listener serves with what arrives — a client
// with a certificate from the mesh CA gets through, one from another CA is refused. A rotation
// pushed over SDS is served to new connections; a secret that does not read is NACKed with the
// reason while the identity held keeps serving; with the agent gone the identity stays and the
// stream comes back when the agent does.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { DevCa, type IssuedCertificate } from '@remora/proxy';
import { startBackend } from './helpers/backends.ts';
import { doc } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';
import { spawnEnvoy, staticBootstrap } from './helpers/bootstrap.ts';
import { certificateSecret, rootsSecret, SdsAgent, SECRET_TYPE } from './helpers/sds-agent.ts';

interface Reply {
  /** 0 when the connection failed before a response. */
  readonly status: number;
  readonly error: string;
  readonly serverSerial: string;
}

/** One request over a fresh mTLS connection to the sidecar's inbound port. */
function mtlsGet(port: number, client: IssuedCertificate, trusted: string): Promise<Reply> {
  return new Promise((resolve) => {
    let data = '';
    let error = '';
    let serverSerial = '';
    const s = tlsConnect({
      host: '127.0.0.1',
      port,
      cert: client.certChainPem,
      key: client.keyPem,
      ca: trusted,
      // SPIFFE certificates carry no host name.
      checkServerIdentity: () => undefined,
    });
    s.setTimeout(5_000, () => s.destroy(new Error('timed out')));
    s.once('secureConnect', () => {
      serverSerial = (s.getPeerCertificate().serialNumber ?? '').toUpperCase();
      s.write('GET / HTTP/1.1\r\nhost: productpage\r\nconnection: close\r\n\r\n');
    });
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('error', (e: Error) => (error ||= e.message));
    s.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      resolve({ status: m ? Number(m[1]) : 0, error, serverSerial });
    });
  });
}

t.test('a STRICT sidecar takes its identity over SDS from the agent socket: serve, rotate, NACK, outage', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-sds-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'socket');
  const meshCa = await DevCa.create();
  const otherCa = await DevCa.create();
  const sidecarId = () => meshCa.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' });
  const first = await sidecarId();
  const peer = await meshCa.issueWorkload({ namespace: 'default', serviceAccount: 'reviews' });
  const stranger = await otherCa.issueWorkload({ namespace: 'default', serviceAccount: 'reviews' });

  const agent = new SdsAgent(`unix:${socket}`);
  agent.set(certificateSecret(first.certChainPem, first.keyPem));
  agent.set(rootsSecret(meshCa.rootCertPem));
  await agent.start();
  t.teardown(() => agent.kill());

  const app = await startBackend('productpage');
  t.teardown(() => app.close());
  const mesh = new MeshDir({
    'mesh.yaml': doc('apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec: { mtls: { mode: STRICT } }\n'),
  });
  t.teardown(() => mesh.cleanup());
  const remora = await startRemora('sidecar', [mesh.dir], [
    '--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default', '--service-account', 'productpage',
    '--sds-address', `unix:${socket}`, '--log-level', 'debug',
  ]);
  t.teardown(() => remora.stop());
  const inbound = remora.ports.inbound;
  const store = remora.proxy.identity!;

  await t.test('the identity arrives over SDS and the STRICT listener serves with it', async (t) => {
    t.equal(store.current?.serial, first.serial, 'the proxy started with the certificate from SDS');
    t.equal(store.current?.spiffeId, 'spiffe://cluster.local/ns/default/sa/productpage');
    const req = agent.requests[0]!;
    t.equal(req.typeUrl, SECRET_TYPE, 'asked for secrets');
    t.same([...req.resourceNames].sort(), ['ROOTCA', 'default'], 'by the names istiod gives them');
    t.ok(req.node?.id !== undefined && req.node.userAgentName === 'remora', 'the node goes on the first request');
    await waitFor('an ACK', () => agent.verdicts.some((v) => v.ack));
    t.same(agent.verdicts.filter((v) => !v.ack), [], 'nothing NACKed');

    const ok = await mtlsGet(inbound, peer, meshCa.rootCertPem);
    t.equal(ok.status, 200, `a client with a mesh certificate gets through (${ok.error})`);
    t.equal(ok.serverSerial, first.serial, 'the sidecar presents the certificate from SDS');
    const seen = app.seen.length;
    const refused = await mtlsGet(inbound, stranger, meshCa.rootCertPem);
    t.equal(refused.status, 0, `a client with a certificate from another CA gets no response (${refused.error || 'closed'})`);
    t.equal(app.seen.length, seen, 'and nothing reaches the app');
  });

  await t.test('a rotation pushed over SDS is served to new connections', async (t) => {
    const next = await sidecarId();
    agent.set(certificateSecret(next.certChainPem, next.keyPem));
    const acks = agent.verdicts.filter((v) => v.ack).length;
    t.equal(agent.push('default'), 1, 'pushed to the proxy stream');
    await waitFor('the rotated certificate', async () => (await mtlsGet(inbound, peer, meshCa.rootCertPem)).serverSerial === next.serial);
    await waitFor('its ACK', () => agent.verdicts.filter((v) => v.ack).length > acks);
    const r = await mtlsGet(inbound, peer, meshCa.rootCertPem);
    t.equal(r.status, 200, 'requests go through with the new identity');
    t.equal(r.serverSerial, next.serial);
    t.ok(remora.log.some((l) => l.includes(`workload certificate rotated`) && l.includes(next.serial)), 'the rotation is logged');
  });

  await t.test('a secret that does not read is NACKed with the reason; the identity held keeps serving', async (t) => {
    const held = store.current!.serial;
    const other = await sidecarId();
    const third = await sidecarId();
    // A key that belongs to another certificate.
    agent.set(certificateSecret(other.certChainPem, third.keyPem));
    agent.push('default');
    await waitFor('a NACK', () => agent.verdicts.some((v) => !v.ack));
    const nack = agent.verdicts.find((v) => !v.ack)!;
    t.match(nack.error, /private key does not match the certificate/, `the reason is sent back (${nack.error})`);
    // Not a PEM at all.
    agent.set(rootsSecret('-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n'));
    agent.push('ROOTCA');
    await waitFor('a second NACK', () => agent.verdicts.filter((v) => !v.ack).length === 2);
    const nack2 = agent.verdicts.filter((v) => !v.ack)[1]!;
    t.match(nack2.error, /Secret ROOTCA: validationContext\.trustedCa does not parse/, `the field is named (${nack2.error})`);
    t.equal(store.current?.serial, held, 'the identity is unchanged');
    const r = await mtlsGet(inbound, peer, meshCa.rootCertPem);
    t.equal(r.status, 200, 'and keeps serving');
    t.equal(r.serverSerial, held);
    t.ok(remora.log.some((l) => /\[error\].*rejected the workload identity from SDS .*does not match.*keeping serial/.test(l)), 'the rejection is logged');
  });

  await t.test('the agent goes away: the identity stays; it comes back and the stream resumes', async (t) => {
    const held = store.current!.serial;
    const opened = agent.streamsOpened;
    agent.kill();
    await waitFor('the proxy to notice', () => remora.log.some((l) => /sds: .*StreamSecrets stream to unix:.* closed/.test(l)));
    const during = await mtlsGet(inbound, peer, meshCa.rootCertPem);
    t.equal(during.status, 200, 'mTLS still served while the agent is down');
    t.equal(during.serverSerial, held, 'with the identity held');

    // Back, with good secrets and a certificate rotated meanwhile.
    const after = await sidecarId();
    agent.set(certificateSecret(after.certChainPem, after.keyPem));
    agent.set(rootsSecret(meshCa.rootCertPem));
    await agent.start();
    await waitFor('a new stream', () => agent.streamsOpened > opened, 15_000);
    await waitFor('the certificate from the new stream', async () => (await mtlsGet(inbound, peer, meshCa.rootCertPem)).serverSerial === after.serial);
    t.equal(store.current?.serial, after.serial, 'the identity from the agent that came back');
    const resumed = agent.requests.at(-1)!;
    t.ok(resumed.versionInfo !== '' || agent.requests.some((r) => r.responseNonce === '' && r.versionInfo !== ''), 'the new stream says which version it holds');
  });
});

t.test('remora envoy: a bootstrap with an sds-grpc cluster takes the identity from the agent socket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-sds-envoy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ca = await DevCa.create();
  const gw = await ca.issueWorkload({ namespace: 'istio-system', serviceAccount: 'istio-ingressgateway' });
  const peer = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'reviews' });
  const agent = new SdsAgent(`unix:${join(dir, 'socket')}`);
  agent.set(certificateSecret(gw.certChainPem, gw.keyPem));
  agent.set(rootsSecret(ca.rootCertPem));
  await agent.start();
  t.teardown(() => agent.kill());
  const backend = await startBackend('behind-mtls');
  t.teardown(() => backend.close());
  const [listenPort, adminPort] = [await freePort(), await freePort()];
  // istiod's sdsConfig, as its listeners and clusters carry it.
  const sds = (name: string): string =>
    `{ name: ${name}, sds_config: { api_config_source: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: sds-grpc } }], set_node_on_first_message_only: true, transport_api_version: V3 }, initial_fetch_timeout: 0s, resource_api_version: V3 } }`;
  const file = join(dir, 'envoy-rev.yaml');
  writeFileSync(
    file,
    staticBootstrap({
      nodeId: 'router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local',
      adminPort,
      listenPort,
      backendPort: backend.port,
      transportSocket: `        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [${sds('default')}]
            combined_validation_context:
              default_validation_context: {}
              validation_context_sds_secret_config: ${sds('ROOTCA')}`,
      extraClusters: `  - name: sds-grpc
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    connect_timeout: 1s
    load_assignment:
      cluster_name: sds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { pipe: { path: ${join(dir, 'socket')} } } }
`,
    }),
  );
  const { child, err, exited } = spawnEnvoy(['-c', file, '-l', 'info']);
  t.teardown(() => child.kill('SIGKILL'));
  await waitFor('remora envoy serves mTLS', async () => (await mtlsGet(listenPort, peer, ca.rootCertPem)).status === 200, 15_000, { output: err });
  const r = await mtlsGet(listenPort, peer, ca.rootCertPem);
  t.equal(r.serverSerial, gw.serial, 'the listener serves the certificate the agent sent');
  t.equal(agent.requests[0]?.node?.id, 'router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local', "the SDS stream carries the bootstrap's node");
  t.ok(err.some((l) => l.includes(`workload identity spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway`) && l.includes('from SDS unix:')), 'the identity is logged with where it came from');
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM exits 0');
});
