/**
 * Schema validation of Istio resources: the generated strict schemas (`schema/<group>/<Kind>.json`,
 * see scripts/gen-schemas.ts), then the semantic checks of Istio's validation webhook
 * (checks.ts). Runs at load time only; each kind's validator is compiled once, on first use.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import { pointerToPath, type ConfigIssue } from '../errors.ts';
import type { Resource } from '../resources/resource.ts';
import { describeErrors } from './ajv-errors.ts';
import { checkResource } from './checks.ts';
import { isSupportedKind, supportedKindOf } from './kinds.ts';

export { isSupportedKind, REMORA_KINDS, SUPPORTED_KINDS, type SupportedKind } from './kinds.ts';

/** API groups whose resources other readers of Remora validate (Kubernetes Gateway API). */
const GROUPS_READ_ELSEWHERE = new Set(['gateway.networking.k8s.io']);

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const UINT32_MAX = 2 ** 32 - 1;

let ajv: Ajv | null = null;
const validators = new Map<string, ValidateFunction>();

function getAjv(): Ajv {
  if (ajv === null) {
    ajv = new Ajv({ allErrors: true, verbose: true, strict: true, strictTypes: false, strictRequired: false });
    ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= INT32_MIN && n <= INT32_MAX });
    ajv.addFormat('uint32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= 0 && n <= UINT32_MAX });
    // Beyond 2^53 a JavaScript number cannot tell; any safe integer is an int64.
    ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
  }
  return ajv;
}

/** The compiled validator of a supported kind, compiled on first use and cached. */
function validatorFor(kind: string, group: string): ValidateFunction {
  let v = validators.get(kind);
  if (v === undefined) {
    const url = new URL(`../../schema/${group}/${kind}.json`, import.meta.url);
    const schema = JSON.parse(readFileSync(url, 'utf8')) as object;
    v = getAjv().compile(schema);
    validators.set(kind, v);
  }
  return v;
}

/**
 * Problems of one resource, `[]` when it is valid: an unsupported apiVersion, schema errors
 * (unknown fields, wrong types, bad enum values, conflicting fields), and Istio's semantic
 * checks on the fields the schema did not already fault. Kinds Remora does not read give a single warning.
 */
export function validateResource(resource: Resource): ConfigIssue[] {
  const issue = (severity: ConfigIssue['severity'], parts: readonly (string | number)[], message: string): ConfigIssue => ({
    severity,
    file: resource.origin.file,
    line: parts.length === 0 ? resource.origin.line : resource.lineOf(parts),
    kind: resource.kind,
    resource: `${resource.metadata.namespace}/${resource.metadata.name}`,
    path: pointerToPath(parts.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('')),
    message,
  });

  if (!isSupportedKind(resource)) {
    if (GROUPS_READ_ELSEWHERE.has(resource.group)) return [];
    return [issue('warning', [], `ignored: Remora does not read ${resource.apiVersion} ${resource.kind}`)];
  }
  const supported = supportedKindOf(resource);
  if (supported === undefined) return []; // unreachable: isSupportedKind checked it
  if (!supported.versions.includes(resource.version)) {
    const list = supported.versions.map((v) => `${supported.group}/${v}`).join(', ');
    return [issue('error', ['apiVersion'], `unsupported apiVersion ${resource.apiVersion} for ${resource.kind}; supported: ${list}`)];
  }

  const validate = validatorFor(resource.kind, supported.group);
  const schemaProblems = validate(resource.document) ? [] : describeErrors(validate.errors ?? [], resource.document);
  // Semantic checks run even when the schema failed, so one run reports every problem; they
  // expect schema-typed input, so a throw means "malformed in a way already reported".
  let findings: ReturnType<typeof checkResource> = [];
  try {
    findings = checkResource(resource.kind, resource.spec, resource.metadata);
  } catch {
    findings = [];
  }
  const reported = schemaProblems.map((p) => pathKey(p.parts));
  const overlaps = (parts: readonly (string | number)[]): boolean => {
    const k = pathKey(parts);
    return reported.some((r) => k === r || k.startsWith(`${r}/`) || r.startsWith(`${k}/`));
  };
  return sortByLine([
    ...schemaProblems.map((p) => issue('error', p.parts, p.message)),
    ...findings.filter((f) => !overlaps(f.path)).map((f) => issue(f.severity, f.path, f.message)),
  ]);
}

function pathKey(parts: readonly (string | number)[]): string {
  return parts.join('/');
}

function sortByLine(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => a.line - b.line);
}
