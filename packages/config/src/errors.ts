/**
 * Configuration problems. Config errors are found at load and compile time only, never on
 * the data plane; each names the file, the resource and the field so a user can fix it.
 */

/** Where a resource was read from. */
export interface ResourceOrigin {
  /** Path as given by the user, or the source's name (`xds`). */
  readonly file: string;
  /** 1-based line of the resource's first line in the file; 0 when unknown. */
  readonly line: number;
}

export interface ConfigIssue {
  readonly severity: 'error' | 'warning';
  readonly file: string;
  /** 1-based line of the offending field (or of its resource); 0 when unknown. */
  readonly line: number;
  /** Resource kind and `namespace/name`; '' when the problem is not inside a resource (a YAML syntax error). */
  readonly kind: string;
  readonly resource: string;
  /** Field path, `spec.http[0].route[0].weight`; '' for the resource as a whole. */
  readonly path: string;
  readonly message: string;
}

export function hasErrors(issues: readonly ConfigIssue[]): boolean {
  return issues.some((i) => i.severity === 'error');
}

/** `file:line: Kind ns/name: field.path: message`, the one format every command prints. */
export function formatIssue(issue: ConfigIssue): string {
  let out = issue.line > 0 ? `${issue.file}:${issue.line}: ` : `${issue.file}: `;
  if (issue.severity === 'warning') out += 'warning: ';
  if (issue.kind !== '') out += `${issue.kind} ${issue.resource}: `;
  if (issue.path !== '') out += `${issue.path}: `;
  return out + issue.message;
}

/** Thrown by loaders and compilers when a config cannot be used; carries every problem found. */
export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[]) {
    const errors = issues.filter((i) => i.severity === 'error');
    super(
      `${errors.length} configuration error${errors.length === 1 ? '' : 's'}:\n` +
        errors.map((i) => '  ' + formatIssue(i)).join('\n'),
    );
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Turns an ajv-style JSON pointer (`/spec/http/0/route`) into a field path (`spec.http[0].route`). */
export function pointerToPath(pointer: string): string {
  if (pointer === '') return '';
  let out = '';
  for (const raw of pointer.slice(1).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (/^\d+$/.test(part)) out += `[${part}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(part)) out += out === '' ? part : `.${part}`;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out;
}

/**
 * An Envoy message that cannot be read or written (JSON, binary or `Any`): names the
 * message type, the field path in the JSON input (`static_resources.listeners[0].name`; ''
 * when the problem is the message as a whole or the input is binary) and the reason.
 */
export class EnvoyCodecError extends Error {
  readonly typeName: string;
  readonly path: string;
  readonly reason: string;
  constructor(typeName: string, path: string, reason: string, options?: ErrorOptions) {
    super(`${typeName}${path === '' ? '' : ` at ${path}`}: ${reason}`, options);
    this.name = 'EnvoyCodecError';
    this.typeName = typeName;
    this.path = path;
    this.reason = reason;
  }
}
