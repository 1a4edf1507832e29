// Schema validation of Istio resources: Istio's own samples pass; each broken resource gives
// exactly the issue (path, line, message) a user needs to fix it.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  formatIssue,
  isSupportedKind,
  parseResources,
  SUPPORTED_KINDS,
  validateResource,
  type ConfigIssue,
  type Resource,
} from '@remora/config';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../..');
const samplesDir = resolve(repoRoot, '../shared/corpus/istio-samples');

/** Parses one YAML document and validates it; parse problems fail the test. */
function validate(yaml: string, file = 'test.yaml'): ConfigIssue[] {
  const { resources, issues } = parseResources(yaml, file);
  if (issues.length > 0) throw new Error(`parse failed: ${issues.map(formatIssue).join('; ')}`);
  return resources.flatMap(validateResource);
}

/** The issues as `path: message` strings, for compact assertions. */
const brief = (issues: readonly ConfigIssue[]): string[] => issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);

function walk(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const full = join(dir, name);
      return statSync(full).isDirectory() ? walk(full) : /\.ya?ml$/.test(name) ? [full] : [];
    });
}

t.test('every Istio sample in the shared corpus is valid', (t) => {
  if (!existsSync(samplesDir)) {
    t.plan(0, `skipped: corpus not found at ${samplesDir} (it lives beside the repository, in shared/corpus)`);
    return;
  }
  const files = walk(samplesDir);
  t.ok(files.length >= 20, `found ${files.length} sample files`);
  let istio = 0;
  for (const file of files) {
    const { resources, issues } = parseResources(readFileSync(file, 'utf8'), relative(repoRoot, file));
    t.same(issues, [], `${relative(samplesDir, file)} parses`);
    for (const r of resources) {
      if (isSupportedKind(r)) istio++;
      t.same(validateResource(r).map(formatIssue), [], `${relative(samplesDir, file)}: ${r.kind} ${r.metadata.name}`);
    }
  }
  t.ok(istio >= 40, `validated ${istio} Istio resources`);
  t.end();
});

const VS_HEAD = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
`;

const DR_HEAD = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
`;

interface BrokenCase {
  readonly name: string;
  readonly yaml: string;
  /** `severity path: message`, in order. */
  readonly expect: readonly string[];
  /** Line of the first issue, when the case pins it. */
  readonly line?: number;
}

const broken: readonly BrokenCase[] = [
  {
    name: 'unknown field, named with its own path and a suggestion',
    yaml: `${VS_HEAD}  http:
  - route:
    - destination:
        host: reviews
      weigth: 10
`,
    expect: ['error spec.http[0].route[0].weigth: unknown field "weigth"; did you mean "weight"?'],
    line: 13,
  },
  {
    name: 'unknown top-level field of spec',
    yaml: `${VS_HEAD}  gateway: [mesh]
  http:
  - route:
    - destination: {host: reviews}
`,
    expect: ['error spec.gateway: unknown field "gateway"; did you mean "gateways"?'],
    line: 9,
  },
  {
    name: 'wrong type',
    yaml: `${VS_HEAD}  http:
  - route:
    - destination:
        host: reviews
      weight: "10"
`,
    expect: ['error spec.http[0].route[0].weight: must be integer, got string "10"'],
    line: 13,
  },
  {
    name: 'a string where a list belongs',
    yaml: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: reviews
  http:
  - route:
    - destination: {host: reviews}
`,
    expect: ['error spec.hosts: must be array, got string "reviews"'],
  },
  {
    name: 'bad enum value',
    yaml: `${DR_HEAD}  trafficPolicy:
    loadBalancer:
      simple: ROUNDROBIN
`,
    expect: [
      'error spec.trafficPolicy.loadBalancer.simple: must be one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST; got string "ROUNDROBIN"',
    ],
    line: 9,
  },
  {
    name: 'int32 out of range',
    yaml: `${DR_HEAD}  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 3000000000
`,
    expect: ['error spec.trafficPolicy.connectionPool.tcp.maxConnections: must be a 32-bit integer, got number 3000000000'],
  },
  {
    name: 'two of exact/prefix/regex: one issue, not one per oneOf branch',
    yaml: `${VS_HEAD}  http:
  - match:
    - uri:
        exact: /login
        prefix: /log
    route:
    - destination: {host: reviews}
`,
    expect: ['error spec.http[0].match[0].uri: only one of exact, prefix, regex may be set (found exact, prefix)'],
    // The line of the `uri:` key the issue names.
    line: 11,
  },
  {
    name: 'two of exact/prefix/regex in a header map value',
    yaml: `${VS_HEAD}  http:
  - match:
    - headers:
        end-user:
          exact: jason
          regex: "j.*"
    route:
    - destination: {host: reviews}
`,
    expect: ['error spec.http[0].match[0].headers.end-user: only one of exact, prefix, regex may be set (found exact, regex)'],
  },
  {
    name: 'simple and consistentHash load balancers together',
    yaml: `${DR_HEAD}  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      consistentHash:
        httpHeaderName: x-user
`,
    expect: ['error spec.trafficPolicy.loadBalancer: only one of simple, consistentHash may be set (found simple, consistentHash)'],
  },
  {
    name: 'bad duration',
    yaml: `${VS_HEAD}  http:
  - route:
    - destination: {host: reviews}
    timeout: 1.5x
`,
    expect: ['error spec.http[0].timeout: invalid duration "1.5x": use a number and a unit (ms, s, m, h), like "1.5s"'],
    line: 12,
  },
  {
    name: 'duration below 1ms where Istio requires one',
    yaml: `${VS_HEAD}  http:
  - route:
    - destination: {host: reviews}
    retries:
      attempts: 3
      perTryTimeout: 500us
`,
    expect: ['error spec.http[0].retries.perTryTimeout: duration must be at least 1ms, got "500us"'],
  },
  {
    name: 'regex with a lookahead (not RE2)',
    yaml: `${VS_HEAD}  http:
  - match:
    - uri:
        regex: "/api/(?!internal).*"
    route:
    - destination: {host: reviews}
`,
    expect: [
      `error spec.http[0].match[0].uri.regex: regex "/api/(?!internal).*" uses a negative lookahead (?!…), which RE2 (Istio's regex engine) does not support`,
    ],
    line: 12,
  },
  {
    name: 'regex with a backreference (not RE2)',
    yaml: `${VS_HEAD}  http:
  - match:
    - headers:
        x-token:
          regex: "(a)\\\\1"
    route:
    - destination: {host: reviews}
`,
    expect: [
      `error spec.http[0].match[0].headers.x-token.regex: regex "(a)\\\\1" uses a backreference (\\1), which RE2 (Istio's regex engine) does not support`,
    ],
  },
  {
    name: 'regex that does not compile',
    yaml: `${VS_HEAD}  http:
  - match:
    - uri:
        regex: "/api/(v1"
    route:
    - destination: {host: reviews}
`,
    expect: ['error spec.http[0].match[0].uri.regex: regex "/api/(v1" is invalid: missing closing ): `/api/(v1`'],
  },
  {
    name: 'regex JavaScript accepts but RE2 does not (\\Z, a repeat over 1000)',
    yaml: `${VS_HEAD}  http:
  - match:
    - uri:
        regex: "/api\\\\Z"
    - queryParams:
        n:
          regex: "a{1001}"
    route:
    - destination: {host: reviews}
`,
    expect: [
      'error spec.http[0].match[0].uri.regex: regex "/api\\\\Z" is invalid: invalid escape sequence: `\\Z`',
      'error spec.http[0].match[1].queryParams.n.regex: regex "a{1001}" is invalid: invalid repeat count: `{1001}`',
    ],
  },
  {
    name: 'CORS origin regex RE2 cannot compile',
    yaml: `${VS_HEAD}  http:
  - corsPolicy:
      allowOrigins: [{regex: "https://(?<host>.*)\\\\k<host>"}]
    route:
    - destination: {host: reviews}
`,
    expect: [
      'error spec.http[0].corsPolicy.allowOrigins[0].regex: regex "https://(?<host>.*)\\\\k<host>" uses a named backreference (\\k<…>), which RE2 (Istio\'s regex engine) does not support',
    ],
  },
  {
    name: 'uriRegexRewrite substitution RE2 cannot apply (a group the pattern lacks, a stray escape)',
    yaml: `${VS_HEAD}  http:
  - match: [{uri: {prefix: /a}}]
    rewrite:
      uriRegexRewrite: {match: "^/a/(.*)$", rewrite: "/b/\\\\2"}
    route:
    - destination: {host: reviews}
  - match: [{uri: {prefix: /c}}]
    rewrite:
      uriRegexRewrite: {match: "^/c/(.*)$", rewrite: "/d/$1\\\\n"}
    route:
    - destination: {host: reviews}
`,
    expect: [
      'error spec.http[0].rewrite.uriRegexRewrite.rewrite: invalid substitution "/b/\\\\2": \\2 but the pattern has 1 capture group',
      'error spec.http[1].rewrite.uriRegexRewrite.rewrite: invalid substitution "/d/$1\\\\n": \\n is not \\0-\\9 or \\\\',
    ],
  },
  {
    name: 'port 0 in a destination',
    yaml: `${VS_HEAD}  http:
  - route:
    - destination:
        host: reviews
        port:
          number: 0
`,
    expect: ['error spec.http[0].route[0].destination.port.number: port number 0 must be in the range 1..65535'],
    line: 14,
  },
  {
    name: 'negative weight',
    yaml: `${VS_HEAD}  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -10
    - destination: {host: reviews, subset: v2}
      weight: 110
`,
    expect: ['error spec.http[0].route[0].weight: weight -10 < 0'],
  },
  {
    name: 'several destinations whose weights are all 0',
    yaml: `${VS_HEAD}  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 0
    - destination: {host: reviews, subset: v2}
`,
    expect: ['error spec.http[0].route: total destination weight = 0'],
  },
  {
    name: 'fault percentage over 100',
    yaml: `${VS_HEAD}  http:
  - fault:
      abort:
        httpStatus: 500
        percentage:
          value: 150
    route:
    - destination: {host: reviews}
`,
    expect: ['error spec.http[0].fault.abort.percentage.value: percentage 150 is neither 0.0, nor in range [0.0001, 100.0]'],
  },
  {
    name: 'invalid match header name',
    yaml: `${VS_HEAD}  http:
  - match:
    - headers:
        "x user":
          exact: a
    route:
    - destination: {host: reviews}
`,
    expect: ['error spec.http[0].match[0].headers["x user"]: header name "x user" is not a valid header name'],
  },
  {
    name: 'STATIC ServiceEntry with a hostname address',
    yaml: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-db
spec:
  hosts:
  - db.example.com
  ports:
  - number: 5432
    name: tcp-postgres
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: db.internal.example.com
`,
    expect: ['error spec.endpoints[0].address: endpoint address "db.internal.example.com" is not a valid IP address'],
    line: 14,
  },
  {
    name: 'ServiceEntry without hosts',
    yaml: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: nothing
spec:
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  endpoints:
  - address: 10.0.0.1
`,
    expect: ['error spec.hosts: service entry must have at least one host'],
  },
  {
    name: 'Gateway server without hosts and with an unknown protocol',
    yaml: `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port:
      number: 21
      name: ftp
      protocol: FTP
    hosts: []
`,
    expect: [
      'error spec.servers[0].port.protocol: invalid protocol "FTP", supported protocols are HTTP, HTTPS, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB, TCP, TLS, UDP, MONGO, REDIS, MYSQL',
      'error spec.servers[0].hosts: server config must contain at least one host',
    ],
  },
  {
    name: 'duplicate and invalid DestinationRule subset names',
    yaml: `${DR_HEAD}  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {version: v1b}
  - name: V_2
    labels: {version: v2}
`,
    expect: ['error spec.subsets[1].name: duplicate subset names: v1', 'error spec.subsets[2].name: subset name is invalid: V_2'],
  },
  {
    name: 'unsupported apiVersion of a known kind',
    yaml: `apiVersion: networking.istio.io/v2
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
`,
    expect: [
      'error apiVersion: unsupported apiVersion networking.istio.io/v2 for VirtualService; supported: networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3',
    ],
    line: 1,
  },
  {
    name: 'EnvoyFilter exists only as v1alpha3',
    yaml: `apiVersion: networking.istio.io/v1
kind: EnvoyFilter
metadata:
  name: f
spec: {}
`,
    expect: ['error apiVersion: unsupported apiVersion networking.istio.io/v1 for EnvoyFilter; supported: networking.istio.io/v1alpha3'],
  },
  {
    name: 'unknown metadata field',
    yaml: `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  label: {app: x}
spec:
  mtls: {mode: STRICT}
`,
    expect: ['error metadata.label: unknown field "label"; did you mean "labels"?'],
    line: 5,
  },
];

t.test('broken resources give exactly the expected issue', async (t) => {
  for (const c of broken) {
    t.test(c.name, async (t) => {
      const issues = validate(c.yaml);
      t.same(brief(issues), c.expect);
      if (c.line !== undefined) t.equal(issues[0]?.line, c.line, 'line of the offending field');
      for (const i of issues) t.equal(i.file, 'test.yaml');
    });
  }
});

t.test('missing metadata.name', async (t) => {
  // The file loader refuses such a document before validation…
  const parsed = parseResources('apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {}\nspec: {}\n', 'pa.yaml');
  t.same(parsed.resources, []);
  t.same(brief(parsed.issues), ['error metadata.name: is required']);
  // …and the schema catches it for resources built by other sources (xDS, tests).
  const document = { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { namespace: 'prod' }, spec: {} };
  const resource: Resource = {
    apiVersion: 'security.istio.io/v1',
    group: 'security.istio.io',
    version: 'v1',
    kind: 'PeerAuthentication',
    metadata: { name: '', namespace: 'prod', labels: {}, annotations: {}, creationTimestamp: '' },
    spec: {},
    document,
    origin: { file: 'xds', line: 0 },
    order: 0,
    lineOf: () => 0,
  };
  const issues = validateResource(resource);
  t.same(brief(issues), ['error metadata.name: is required']);
  t.equal(issues[0]?.resource, 'prod/');
});

t.test('a kind Remora does not read gives one warning and no error', async (t) => {
  const issues = validate(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
spec:
  replicas: 1
  weird: [whatever]
`);
  t.same(brief(issues), ['warning : ignored: Remora does not read apps/v1 Deployment']);
  t.equal(issues[0]?.kind, 'Deployment');
  t.equal(issues[0]?.line, 1);
  const core = validate('apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{port: 9080}]}\n');
  t.same(brief(core), ['warning : ignored: Remora does not read v1 Service']);
  t.equal(formatIssue(core[0] as ConfigIssue), 'test.yaml:1: warning: Service default/reviews: ignored: Remora does not read v1 Service');
});

t.test('Gateway API resources are left to their own validator', async (t) => {
  t.same(validate('apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n'), []);
  t.same(validate('apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n'), []);
});

t.test('the line points at the offending field in a multi-document file', async (t) => {
  const yaml = [
    'apiVersion: networking.istio.io/v1', //  1
    'kind: DestinationRule', //                2
    'metadata:', //                            3
    '  name: ratings', //                      4
    'spec:', //                                5
    '  host: ratings', //                      6
    '---', //                                  7
    'apiVersion: networking.istio.io/v1', //  8
    'kind: VirtualService', //                 9
    'metadata:', //                           10
    '  name: ratings', //                     11
    '  namespace: prod', //                   12
    'spec:', //                               13
    '  hosts: [ratings]', //                  14
    '  http:', //                             15
    '  - route:', //                          16
    '    - destination:', //                  17
    '        host: ratings', //               18
    '      weight: 100', //                   19
    '    timeout: 10', //                     20
    '',
  ].join('\n');
  const { resources, issues: parseIssues } = parseResources(yaml, 'mesh/ratings.yaml');
  t.same(parseIssues, []);
  t.equal(resources.length, 2);
  t.same(validateResource(resources[0] as Resource), []);
  const issues = validateResource(resources[1] as Resource);
  t.same(
    issues.map(formatIssue),
    ['mesh/ratings.yaml:20: VirtualService prod/ratings: spec.http[0].timeout: must be string, got number 10'],
  );
});

t.test('fields Istio added after 1.18 are accepted', async (t) => {
  const issues = validate(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - mirrors:
    - destination: {host: reviews, subset: v2}
      percentage: {value: 10}
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}]
      unmatchedPreflights: IGNORE
    retries:
      attempts: 3
      backoff: 25ms
      retryIgnorePreviousHosts: true
    rewrite:
      uriRegexRewrite: {match: "^/v1/(.*)$", rewrite: "/\\\\1"}
    route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    proxyProtocol: {version: V2}
    connectionPool:
      http: {maxConcurrentStreams: 100}
      tcp: {idleTimeout: 1h}
    loadBalancer:
      consistentHash:
        httpCookie:
          name: session
          ttl: 0s
          attributes: [{name: SameSite, value: Strict}]
        ringHash: {minimumRingSize: 1024}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend}
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  rules:
  - from:
    - source:
        serviceAccounts: [bookinfo/productpage]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: ingress}
  jwtRules:
  - issuer: testing@secure.istio.io
    fromCookies: [token]
    timeout: 5s
`);
  t.same(brief(issues), []);
});

t.test('weights follow Istio: relative, may be omitted for a single destination', async (t) => {
  t.same(validate(`${VS_HEAD}  http:\n  - route:\n    - destination: {host: reviews}\n`), []);
  // Istio normalises weights; it does not cap them at 100.
  const issues = validate(`${VS_HEAD}  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 150
    - destination: {host: reviews, subset: v2}
      weight: 50
`);
  t.same(brief(issues), []);
});

t.test('SUPPORTED_KINDS and isSupportedKind', async (t) => {
  t.same(SUPPORTED_KINDS.VirtualService, { group: 'networking.istio.io', versions: ['v1', 'v1beta1', 'v1alpha3'] });
  t.same(SUPPORTED_KINDS.AuthorizationPolicy, { group: 'security.istio.io', versions: ['v1', 'v1beta1'] });
  t.same(SUPPORTED_KINDS.EnvoyFilter, { group: 'networking.istio.io', versions: ['v1alpha3'] });
  t.same(SUPPORTED_KINDS.ProxyConfig, { group: 'networking.istio.io', versions: ['v1beta1'] });
  t.same(SUPPORTED_KINDS.Telemetry, { group: 'telemetry.istio.io', versions: ['v1', 'v1alpha1'] });
  t.equal(Object.keys(SUPPORTED_KINDS).length, 12);
  t.equal(isSupportedKind({ group: 'networking.istio.io', kind: 'Gateway' }), true);
  t.equal(isSupportedKind({ group: 'gateway.networking.k8s.io', kind: 'Gateway' }), false);
  t.equal(isSupportedKind({ group: 'networking.istio.io', kind: 'toString' }), false);
});

t.test('every supported version of a kind uses the same schema', async (t) => {
  for (const version of ['v1', 'v1beta1', 'v1alpha3']) {
    const issues = validate(`apiVersion: networking.istio.io/${version}
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  extra: 1
`);
    t.same(brief(issues), ['error spec.extra: unknown field "extra"'], version);
  }
});

t.test('the committed schemas are what scripts/gen-schemas.ts generates', async (t) => {
  const script = resolve(here, '../scripts/gen-schemas.ts');
  const run = spawnSync(process.execPath, [script, '--check'], { encoding: 'utf8' });
  t.equal(run.stderr, '', 'no complaints');
  t.equal(run.stdout.trim(), 'Schemas are up to date.');
  t.equal(run.status, 0);
});
