// Every mesh the translator tests use, translated for a sidecar and a gateway: the bookinfo
// samples (each with the bookinfo services), the coffee-shop example, and the YAML fixtures
// written out in the translator tests. For tests that must hold for any translated config
// (the Envoy importers read back what the exporter writes of each).
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ProxyConfig, ProxyNode } from '@remora/config';
import { BOOKINFO_DIR, BOOKINFO_SERVICES, INGRESS, PORTS, REPO_ROOT, SIDECAR, translate } from './translate.ts';

export interface NamedMesh {
  readonly name: string;
  readonly config: ProxyConfig;
}

const TEST_DIR = resolve(REPO_ROOT, 'packages/config/test');
const COFFEE_SHOP_DIR = resolve(REPO_ROOT, 'examples/coffee-shop/mesh');

/**
 * The YAML texts written out in the translator tests: template literals holding a resource,
 * with `${BOOKINFO_SERVICES}` filled in; those built from other values are left out.
 */
function testFixtures(): { name: string; yaml: string }[] {
  const out: { name: string; yaml: string }[] = [];
  for (const file of readdirSync(TEST_DIR).filter((f) => f.startsWith('translate-') && f.endsWith('.test.ts'))) {
    const src = readFileSync(join(TEST_DIR, file), 'utf8');
    let i = 0;
    for (const m of src.matchAll(/`([^`]*apiVersion:[^`]*)`/g)) {
      const yaml = m[1]!.replaceAll('${BOOKINFO_SERVICES}', BOOKINFO_SERVICES);
      if (yaml.includes('${')) continue;
      out.push({ name: `${file}#${i++}`, yaml });
    }
  }
  return out;
}

/** Translations without errors (fixtures of invalid input are skipped), for the sidecar and the ingress gateway. */
export function allMeshes(): NamedMesh[] {
  const texts: { name: string; yaml: string | string[] }[] = [];
  try {
    for (const f of readdirSync(BOOKINFO_DIR).filter((x) => x.endsWith('.yaml'))) {
      texts.push({ name: `bookinfo/${f}`, yaml: [BOOKINFO_SERVICES, readFileSync(join(BOOKINFO_DIR, f), 'utf8')] });
    }
  } catch {
    // The shared corpus is beside the repository; without it, the other meshes still run.
  }
  texts.push({ name: 'coffee-shop', yaml: readdirSync(COFFEE_SHOP_DIR).filter((f) => f.endsWith('.yaml')).map((f) => readFileSync(join(COFFEE_SHOP_DIR, f), 'utf8')) });
  texts.push(...testFixtures());
  const out: NamedMesh[] = [];
  const nodes: [string, ProxyNode][] = [['sidecar', SIDECAR], ['gateway', INGRESS]];
  for (const { name, yaml } of texts) {
    for (const [kind, node] of nodes) {
      try {
        const r = translate(yaml, node, { ...PORTS, appPort: 9080 });
        if (r.issues.some((i) => i.severity === 'error')) continue;
        out.push({ name: `${name} (${kind})`, config: r.config });
      } catch {
        // A fixture of invalid input: what the translator rejects has nothing to export.
      }
    }
  }
  return out;
}
