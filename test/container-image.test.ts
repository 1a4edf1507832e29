// The images, built and run: docker/build.sh builds remora and remora-init with podman,
// docker/pod.sh runs a pod (init container, sidecar, app) beside an upstream server, and the
// test checks what the pod shows: the app's outgoing call and a call into the app's port
// both pass through the sidecar (its access log has them), the sidecar runs as 1337 with no
// capabilities, and the image stays under its size goal.
//
// Opt-in: building takes minutes. REMORA_IMAGE_TEST=1 runs it (as root, with podman);
// REMORA_IMAGE_REUSE=1 uses already built images instead of running docker/build.sh.
import t from 'tap';
import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { run, runOk } from './helpers/netns.ts';
import { REPO } from './helpers/remora.ts';

const TAG = 'dev';
/** The remora image's size goal, as podman counts it (uncompressed, 1 MB = 10^6 bytes). */
const SIZE_GOAL_MB = 150;
const POD_SH = join(REPO, 'docker/pod.sh');

async function why(): Promise<string | null> {
  if (process.env.REMORA_IMAGE_TEST !== '1') return 'builds container images (minutes): set REMORA_IMAGE_TEST=1 to run it';
  if (process.getuid?.() !== 0) return 'needs root (podman’s rootful storage, the pod’s iptables)';
  if ((await run('podman', ['--version'])).code !== 0) return 'needs podman (apt-get install podman buildah runc debootstrap)';
  return null;
}

const skip = await why();
t.test('the remora image: built, under its size goal, and a pod whose traffic goes through it', { skip: skip ?? false }, async (t) => {
  if (process.env.REMORA_IMAGE_REUSE !== '1') {
    const started = Date.now();
    await runOk('sh', [join(REPO, 'docker/build.sh'), '--tag', TAG], { timeoutMs: 30 * 60_000 });
    t.comment(`docker/build.sh: ${Math.round((Date.now() - started) / 1000)} s`);
  }
  const size = Number((await runOk('podman', ['image', 'inspect', '--format', '{{.Size}}', `remora:${TAG}`])).trim());
  t.comment(`remora:${TAG} is ${(size / 1e6).toFixed(1)} MB`);
  t.ok(size < SIZE_GOAL_MB * 1e6, `remora:${TAG} under ${SIZE_GOAL_MB} MB (${(size / 1e6).toFixed(1)} MB)`);

  // Until the proxy takes --conntrack-fd, the entrypoint is told not to pass it.
  const help = await runOk('podman', ['run', '--rm', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', '--entrypoint', '/usr/local/bin/remora', `remora:${TAG}`, 'sidecar', '--help']);
  const conntrack = /^\s+--conntrack-fd /m.test(help);
  const env = { ...process.env, ...(conntrack ? {} : { REMORA_CONNTRACK: 'off' }) };
  t.teardown(() => run('sh', [POD_SH, 'down'], { timeoutMs: 60_000 }));
  const up = await run('sh', [POD_SH, 'up', '--tag', TAG], { timeoutMs: 10 * 60_000, env });
  t.equal(up.code, 0, `docker/pod.sh up: ${up.stderr}`);
  const check = await run('sh', [POD_SH, 'check', '--tag', TAG], { timeoutMs: 60_000, env });
  t.comment(check.stdout);
  t.equal(check.code, 0, `docker/pod.sh check: ${check.stderr}`);
  t.match(check.stdout, /== outbound[^\n]*\n200 hello from the upstream\n/, 'the app’s call to upstream.demo:8000 is answered');
  t.match(check.stdout, /== inbound[^\n]*\n200 hello from the app\n/, 'a call into the pod’s app port is answered');

  const accessLog = (await runOk('podman', ['logs', 'remora-demo-sidecar'])).split('\n').filter((l) => l.startsWith('['));
  t.ok(accessLog.some((l) => /"GET \/ HTTP\/1\.1" 200 /.test(l) && l.includes('outbound|8000||upstream.demo')), 'the sidecar’s access log has the outbound call, to the upstream cluster');
  t.ok(accessLog.some((l) => /"GET \/ HTTP\/1\.1" 200 /.test(l) && l.includes('inbound|8080')), 'and the inbound call, to the app');

  const pid = (await runOk('podman', ['inspect', '-f', '{{.State.Pid}}', 'remora-demo-sidecar'])).trim();
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  t.match(status, /^Uid:\s+1337\s+1337\s+1337\s+1337$/m, 'the sidecar runs as UID 1337');
  t.match(status, /^Gid:\s+1337\s+1337\s+1337\s+1337$/m, 'and GID 1337');
  t.match(status, /^Groups:\s*$/m, 'with no supplementary groups');
  for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) t.match(status, new RegExp(`^${set}:\\s+0+$`, 'm'), `${set} empty`);
  t.match(status, /^NoNewPrivs:\s+1$/m, 'no_new_privs');
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  if (conntrack) {
    t.same(cmdline.slice(1, 5), ['/opt/remora/dist/cli.js', 'sidecar', '--conntrack-fd', '3'], 'remora is given the conntrack descriptor');
    t.match(readlinkSync(`/proc/${pid}/fd/3`), /\/net\/nf_conntrack$/, 'descriptor 3 is the conntrack table, opened as root');
  } else {
    t.comment('the image’s remora has no --conntrack-fd yet: ran with REMORA_CONNTRACK=off');
  }
});
