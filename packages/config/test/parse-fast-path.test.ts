// The fast YAML path (js-yaml) must read every file exactly as the exact path (`yaml`'s
// document model) does: the same values, the same resource lines, the same field lines, and
// the same messages for anything wrong.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import t, { type Test } from 'tap';
import { parseResources, parseResourcesExact } from '@remora/config';

/** The shared corpus beside the repository (`REMORA_CORPUS` points elsewhere). */
const CORPUS = process.env.REMORA_CORPUS ?? resolve(import.meta.dirname, '../../../../shared/corpus');

function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...yamlFiles(full));
    else if (/\.(ya?ml|json)$/.test(name)) out.push(full);
  }
  return out;
}

function same(t: Test, text: string, file: string): void {
  const fast = parseResources(text, file);
  const exact = parseResourcesExact(text, file);
  t.same(fast.issues, exact.issues, `${file}: the same issues`);
  t.same(fast.resources.map((r) => r.document), exact.resources.map((r) => r.document), `${file}: the same values`);
  t.same(fast.resources.map((r) => r.origin.line), exact.resources.map((r) => r.origin.line), `${file}: the same resource lines`);
  t.same(
    fast.resources.map((r) => [r.lineOf(['spec']), r.lineOf(['metadata', 'name']), r.lineOf(['spec', 'http', 0, 'route', 0])]),
    exact.resources.map((r) => [r.lineOf(['spec']), r.lineOf(['metadata', 'name']), r.lineOf(['spec', 'http', 0, 'route', 0])]),
    `${file}: the same field lines`,
  );
}

t.test('every YAML file of the Istio corpus reads the same both ways', async (t) => {
  if (!existsSync(CORPUS)) {
    t.plan(0, `skipped: corpus not found at ${CORPUS} (it lives beside the repository, in shared/corpus)`);
    return;
  }
  const files = yamlFiles(CORPUS);
  t.ok(files.length > 20, `${files.length} files`);
  for (const f of files) same(t, readFileSync(f, 'utf8'), f);
});

const head = 'apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\n';
const CASES: Record<string, string> = {
  'YAML 1.2 scalars': `${head}data:\n  a: yes\n  b: on\n  c: 0o17\n  d: 017\n  e: 0x1f\n  f: 1_000\n  g: 2001-12-14\n  h: .inf\n  i: -.NaN\n  j: ~\n  k: Null\n  l: TRUE\n  m: 1e3\n  n: 12345678901234567890\n  o: "quoted"\n  p: '0x10'\n  q: +12\n  r: .5\n`,
  'block scalars and comments': `# leading\n${head}data:\n  lit: |\n    one\n    two\n  fold: >-\n    a\n    b\n  # between\n  plain: value # trailing\n`,
  'merge key stays a key': `${head}data:\n  <<: { a: 1 }\n  b: 2\n`,
  'empty documents and a List': `---\n---\napiVersion: v1\nkind: List\nitems:\n- ${head.replace(/\n(?!$)/g, '\n  ')}- apiVersion: v1\n  kind: Secret\n  metadata: { name: y }\n---\n`,
  'anchors and aliases': `${head}data:\n  a: &x { k: v }\n  b: *x\n`,
  'duplicate keys': `${head}data:\n  a: 1\n  a: 2\n`,
  'syntax error': `${head}data: { a: 1\n`,
  'a document that is no resource': `${head}---\n- just\n- a list\n`,
  'no name': 'apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n',
  'tabs and CRLF': `apiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: crlf\r\ndata:\r\n  a: "tab\\there"\r\n`,
  JSON: '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}, "data": {"n": 1.50, "s": "x"}}',
};

t.test('edge cases read the same both ways', async (t) => {
  for (const [name, text] of Object.entries(CASES)) same(t, text, `${name}.yaml`);
});
