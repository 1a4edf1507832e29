// Istio's semantic rules (pkg/config/validation), one case per rule, plus the duration and
// regex helpers they rest on.
import t from 'tap';
import { parseDuration, parseResources, validateResource, type ConfigIssue } from '@remora/config';
import { checkRegex } from '../src/schema/regex.ts';

function validate(yaml: string): ConfigIssue[] {
  const { resources, issues } = parseResources(yaml, 'test.yaml');
  if (issues.length > 0) throw new Error(`parse failed: ${issues.map((i) => i.message).join('; ')}`);
  return resources.flatMap(validateResource);
}
const brief = (issues: readonly ConfigIssue[]): string[] => issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);

t.test('parseDuration reads Go/protobuf duration strings as milliseconds', async (t) => {
  const good: [string, number][] = [
    ['1.5s', 1500],
    ['100ms', 100],
    ['1h', 3_600_000],
    ['1h30m', 5_400_000],
    ['2m3.5s', 123_500],
    ['0', 0],
    ['0s', 0],
    ['250us', 0.25],
    ['250µs', 0.25],
    ['1000000ns', 1],
    ['.5s', 500],
    ['5.s', 5000],
    ['-1s', -1000],
    ['+2s', 2000],
  ];
  for (const [s, ms] of good) t.equal(parseDuration(s), ms, s);
  for (const s of ['', '1', '10 s', '1.5x', 's', '.s', '1d', '1s ', '--1s', '1h-30m', '0x10s']) t.equal(parseDuration(s), null, JSON.stringify(s));
});

t.test('checkRegex accepts RE2 patterns and names what RE2 lacks', async (t) => {
  for (const re of ['^/api/v[0-9]+/.*$', '[(?=]x', '\\(?=x\\)', 'a{2,3}', '(?:a|b)+', '\\d\\w\\s', '\\12']) {
    t.equal(checkRegex(re), null, re);
  }
  t.match(checkRegex('a(?=b)'), /uses a lookahead/);
  t.match(checkRegex('a(?!b)'), /uses a negative lookahead/);
  t.match(checkRegex('(?<=a)b'), /uses a lookbehind/);
  t.match(checkRegex('(?<!a)b'), /uses a negative lookbehind/);
  t.match(checkRegex('(a)\\1'), /uses a backreference \(\\1\)/);
  t.match(checkRegex('(?<x>a)\\k<x>'), /uses a named backreference/);
  t.match(checkRegex('\\u0041'), /uses a \\u escape/);
  t.equal(checkRegex(''), 'regex must not be empty');
  t.equal(checkRegex('a'.repeat(1025)), 'regex is too large, max length allowed is 1024');
  t.equal(checkRegex('[a-'), 'regex "[a-" is invalid: missing closing ]: `[a-`');
});

t.test('checkRegex compiles with RE2 itself: RE2-only syntax passes, what only JavaScript reads fails', async (t) => {
  // Istio (Go regexp) and Envoy (RE2) accept these; JavaScript reads them differently or not at all.
  for (const re of ['(?i)^/API/.*', '[[:alpha:]]+', '\\pL+', '\\A/x\\z', '(?P<v>v[0-9]+)', '(?s:.*)', '\\Q.*\\E']) t.equal(checkRegex(re), null, re);
  t.equal(checkRegex('x\\Z'), 'regex "x\\\\Z" is invalid: invalid escape sequence: `\\Z`');
  t.equal(checkRegex('a{1001}'), 'regex "a{1001}" is invalid: invalid repeat count: `{1001}`');
  t.equal(checkRegex('a**'), 'regex "a**" is invalid: invalid nested repetition operator: `**`');
  t.equal(checkRegex('\\e'), 'regex "\\\\e" is invalid: invalid escape sequence: `\\e`');
});

const vs = (spec: string, name = 'vs'): string =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ${name}}\nspec:\n${spec}`;
const dr = (spec: string): string => `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\nspec:\n  host: reviews\n${spec}`;
const route = '    route:\n    - destination: {host: reviews}\n';

interface RuleCase {
  readonly rule: string;
  readonly yaml: string;
  readonly expect: readonly string[];
}

const rules: readonly RuleCase[] = [
  // VirtualService
  {
    rule: 'a VirtualService without routes',
    yaml: vs('  hosts: [reviews]\n'),
    expect: ['error spec: http, tcp or tls must be provided in virtual service'],
  },
  {
    rule: 'a delegate VirtualService (no hosts) may not name gateways',
    yaml: vs(`  gateways: [ingress]\n  http:\n  - name: r\n${route}`),
    expect: ['error spec.gateways: delegate virtual service must have no gateways specified'],
  },
  {
    rule: 'the * host is not allowed for the mesh',
    yaml: vs(`  hosts: ["*"]\n  http:\n  - name: r\n${route}`),
    expect: ['error spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway'],
  },
  {
    rule: 'overlapping hosts',
    yaml: vs(`  hosts: ["*.example.com", api.example.com]\n  http:\n  - name: r\n${route}`),
    expect: ['error spec.hosts[1]: duplicate hosts in virtual service: *.example.com & api.example.com'],
  },
  {
    rule: 'a route needs a destination, a redirect or a direct response',
    yaml: vs('  hosts: [reviews]\n  http:\n  - name: empty\n    timeout: 1s\n'),
    expect: ['error spec.http[0]: HTTP route, redirect or directResponse is required'],
  },
  {
    rule: 'redirect and route together',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - redirect: {uri: /v2}\n${route}`),
    expect: ['error spec.http[0].route: HTTP route cannot contain both route and redirect'],
  },
  {
    rule: 'redirect codes are 3xx',
    yaml: vs('  hosts: [reviews]\n  http:\n  - redirect: {uri: /v2, redirectCode: 200}\n'),
    expect: ['error spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx'],
  },
  {
    rule: 'retry settings with attempts 0',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - retries: {retryOn: 5xx}\n${route}`),
    expect: ['error spec.http[0].retries: http retry policy configured when attempts are set to 0 (disabled)'],
  },
  {
    rule: 'unknown retryOn policy',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - retries: {attempts: 2, retryOn: "5xx,503,connect-failures"}\n${route}`),
    expect: ['error spec.http[0].retries.retryOn: "connect-failures" is not a valid retryOn policy'],
  },
  {
    rule: 'fault injection needs an abort or a delay',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - fault: {}\n${route}`),
    expect: ['error spec.http[0].fault: HTTP fault injection must have an abort and/or a delay'],
  },
  {
    rule: 'abort status in 200..599',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - fault: {abort: {httpStatus: 99, percentage: {value: 10}}}\n${route}`),
    expect: ['error spec.http[0].fault.abort.httpStatus: HTTP status 99 is not in range 200-599'],
  },
  {
    rule: 'fixed delay of 0',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - fault: {delay: {fixedDelay: 0s, percentage: {value: 100}}}\n${route}`),
    expect: ['error spec.http[0].fault.delay.fixedDelay: duration must be at least 1ms, got "0s"'],
  },
  {
    rule: 'mirror percentage over 100',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - mirror: {host: reviews-shadow}\n    mirrorPercentage: {value: 120}\n${route}`),
    expect: ['error spec.http[0].mirrorPercentage.value: percentage 120 is not in range 0..100'],
  },
  {
    rule: 'mirrors entries need a destination',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - mirrors:\n    - percentage: {value: 5}\n${route}`),
    expect: ['error spec.http[0].mirrors[0].destination: is required'],
  },
  {
    rule: 'destination host * and an invalid subset',
    yaml: vs('  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: "*", subset: V_1}\n'),
    expect: ['error spec.http[0].route[0].destination.host: invalid destination host *', 'error spec.http[0].route[0].destination.subset: subset name is invalid: V_1'],
  },
  {
    rule: 'pseudo-headers cannot be set',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - headers:\n      request:\n        set: {":path": /x}\n      response:\n        remove: [host]\n${route}`),
    expect: [
      'error spec.http[0].headers.request.set[":path"]: invalid header ":path": header cannot have ":" prefix',
      'error spec.http[0].headers.response.remove[0]: invalid header "host": cannot set Host header',
    ],
  },
  {
    rule: 'CORS max age in whole seconds, methods known',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - corsPolicy: {maxAge: 1500ms, allowMethods: [GET, FETCH]}\n${route}`),
    expect: [
      'error spec.http[0].corsPolicy.allowMethods[1]: "FETCH" is not a supported HTTP method',
      'error spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision',
    ],
  },
  {
    rule: 'JWT claim routing only on gateways',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        "@request.auth.claims.group": {exact: admin}\n${route}`),
    expect: ['error spec.http[0].match[0].headers["@request.auth.claims.group"]: JWT claim based routing (key: @request.auth.claims.group) is only supported for gateway'],
  },
  {
    rule: 'JWT claim routing in the [] form is a claim too: only on gateways',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - match:\n    - withoutHeaders:\n        "@request.auth.claims[group][id]": {exact: admin}\n${route}`),
    expect: ['error spec.http[0].match[0].withoutHeaders["@request.auth.claims[group][id]"]: JWT claim based routing (key: @request.auth.claims[group][id]) is only supported for gateway'],
  },
  {
    rule: 'JWT claim routing, both forms, on a gateway',
    yaml: vs(`  hosts: [reviews]\n  gateways: [gw]\n  http:\n  - match:\n    - headers:\n        "@request.auth.claims.groups": {exact: group1}\n        "@request.auth.claims[org][team]": {prefix: pay}\n${route}`),
    expect: [],
  },
  {
    rule: 'rewrite uri and uriRegexRewrite together',
    yaml: vs(`  hosts: [reviews]\n  http:\n  - rewrite: {uri: /, uriRegexRewrite: {match: "^/a", rewrite: /b}}\n${route}`),
    expect: ['error spec.http[0].rewrite: rewrite may only contain one of URI or UriRegexRewrite'],
  },
  {
    rule: 'TCP route needs destinations',
    yaml: vs('  hosts: [db]\n  tcp:\n  - match: [{port: 3306}]\n'),
    expect: ['error spec.tcp[0]: TCP route is required'],
  },
  {
    rule: 'TLS SNI hosts must be covered by the VirtualService hosts',
    yaml: vs('  hosts: ["*.example.com"]\n  gateways: [ingress]\n  tls:\n  - match: [{sniHosts: [api.other.com], port: 443}]\n    route:\n    - destination: {host: api}\n'),
    expect: ['error spec.tls[0].match[0].sniHosts[0]: SNI host "api.other.com" is not a compatible subset of any of the virtual service hosts: [*.example.com]'],
  },
  // DestinationRule
  {
    rule: 'an empty traffic policy',
    yaml: dr('  trafficPolicy: {}\n'),
    expect: ['error spec.trafficPolicy: traffic policy must have at least one field'],
  },
  {
    rule: 'outlier detection percentages and durations',
    yaml: dr('  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 120, interval: 0.5ms, baseEjectionTime: 30s}\n'),
    expect: [
      'error spec.trafficPolicy.outlierDetection.interval: duration must be at least 1ms, got "0.5ms"',
      'error spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 120 is not in range 0..100',
    ],
  },
  {
    rule: 'negative pool sizes',
    yaml: dr('  trafficPolicy:\n    connectionPool:\n      http: {http1MaxPendingRequests: -1}\n'),
    expect: ['error spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: http1MaxPendingRequests must be non-negative'],
  },
  {
    rule: 'maglev table size must be prime',
    yaml: dr('  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}\n'),
    expect: ['error spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime number for maglev'],
  },
  {
    rule: 'two hash keys in consistentHash',
    yaml: dr('  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, httpHeaderName: x-user}\n'),
    expect: ['error spec.trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be set (found httpHeaderName, useSourceIp)'],
  },
  {
    rule: 'locality weights must total 100',
    yaml: dr('  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3}\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: us-west/*\n          to: {"us-west/*": 60, "us-east/*": 30}\n'),
    expect: ['error spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: total locality weight 90 != 100'],
  },
  {
    rule: "failover with outlier detection at the default ejection cap (istio.io's locality failover task)",
    yaml: dr('  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n    loadBalancer:\n      localityLbSetting:\n        enabled: true\n        failover: [{from: region1, to: region2}]\n'),
    expect: [
      'warning spec.trafficPolicy.loadBalancer.localityLbSetting: outlierDetection.maxEjectionPercent is unset: at its default (10%) outlier detection ejects at most one endpoint in ten (always at least one), so once that many are out traffic stays on a failed locality; Kubernetes readiness would take drained endpoints out, without it only ejections move traffic on: set maxEjectionPercent (100 lets traffic fail over through every locality)',
    ],
  },
  {
    rule: 'failover with an ejection cap set: no warning',
    yaml: dr('  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 100}\n    loadBalancer:\n      localityLbSetting:\n        failoverPriority: [topology.kubernetes.io/region]\n'),
    expect: [],
  },
  {
    rule: 'mutual TLS origination needs a client certificate',
    yaml: dr('  trafficPolicy:\n    tls: {mode: MUTUAL}\n'),
    expect: ['error spec.trafficPolicy.tls: client certificate required for mutual tls', 'error spec.trafficPolicy.tls: private key required for mutual tls'],
  },
  {
    rule: 'tunnel target port',
    yaml: dr('  trafficPolicy:\n    tunnel: {targetHost: proxy.example.com, targetPort: 0}\n'),
    expect: ['error spec.trafficPolicy.tunnel.targetPort: tunnel target port is invalid: port number 0 must be in the range 1..65535'],
  },
  {
    rule: 'port-level settings need a port',
    yaml: dr('  trafficPolicy:\n    portLevelSettings:\n    - tls: {mode: SIMPLE}\n'),
    expect: ['error spec.trafficPolicy.portLevelSettings[0]: portTrafficPolicy must have valid port'],
  },
  // Gateway
  {
    rule: 'HTTPS servers need TLS settings',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [example.com]\n',
    expect: ['error spec.servers[0]: server must have TLS settings for HTTPS/TLS protocols'],
  },
  {
    rule: 'SIMPLE TLS needs a certificate and key (or a credential)',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [example.com]\n    tls: {mode: SIMPLE}\n  - port: {number: 8443, name: https2, protocol: https}\n    hosts: [example.com]\n    tls: {mode: SIMPLE, credentialName: example-cert}\n',
    expect: ['error spec.servers[0].tls: SIMPLE TLS requires a server certificate', 'error spec.servers[0].tls: SIMPLE TLS requires a private key'],
  },
  {
    rule: 'gateway hosts: no short names, namespace/host form',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [reviews, "prod/*.example.com", "Bad_NS/x.com"]\n',
    expect: ['error spec.servers[0].hosts[0]: short names (non FQDN) are not allowed', 'error spec.servers[0].hosts[2]: invalid namespace value "Bad_NS" in gateway'],
  },
  {
    rule: 'duplicate server port names',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ["*"]\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ["*"]\n',
    expect: ['error spec.servers[1].port.name: port names in servers must be unique: duplicate name http'],
  },
  // ServiceEntry / WorkloadEntry
  {
    rule: 'DNS resolution without endpoints needs FQDN hosts',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n  hosts: ["*.example.com"]\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: DNS\n',
    expect: ['error spec.hosts[0]: hosts must be FQDN if no endpoints are provided for resolution mode DNS'],
  },
  {
    rule: 'endpoint ports must name service ports',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n  - address: 10.0.0.7\n    ports: {grpc: 9090}\n',
    expect: ['error spec.endpoints[0].ports.grpc: endpoint port 9090 is not defined by the service entry'],
  },
  {
    rule: 'STATIC accepts IPs and unix sockets',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n  - address: 10.0.0.7\n  - address: "2001:db8::7"\n  - address: unix:///var/run/api.sock\n',
    expect: [],
  },
  {
    rule: 'several hosts on a plain TCP port',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n  hosts: [a.example.com, b.example.com]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n  resolution: DNS\n',
    expect: ['error spec.ports[0]: multiple hosts provided with non-HTTP, non-TLS ports'],
  },
  {
    rule: 'WorkloadEntry address',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: we}\nspec:\n  address: not_a_host!\n  ports: {http: 70000}\n',
    expect: [
      'error spec.address: endpoint address "not_a_host!" is not a valid FQDN or an IP address',
      'error spec.ports.http: port number 70000 must be in the range 1..65535',
    ],
  },
  // Sidecar
  {
    rule: 'sidecar egress hosts are namespace/host',
    yaml: 'apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  egress:\n  - hosts: ["./*", "istio-system/*", reviews.default.svc.cluster.local]\n',
    expect: ['error spec.egress[0].hosts[2]: host must be of form namespace/dnsName'],
  },
  // Security
  {
    rule: 'port-level mTLS needs a workload selector',
    yaml: 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec:\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    "8080": {mode: DISABLE}\n',
    expect: ['error spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS'],
  },
  {
    rule: 'JWT rules need an issuer; jwksUri must be http(s)',
    yaml: 'apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\nspec:\n  jwtRules:\n  - jwksUri: file:///etc/jwks.json\n',
    expect: ['error spec.jwtRules[0].issuer: issuer must be set', 'error spec.jwtRules[0].jwksUri: URI scheme "file" is not supported'],
  },
  {
    rule: 'selector and targetRefs together',
    yaml: 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  targetRefs: [{kind: Service, group: "", name: reviews}]\n',
    expect: ['error spec: only one of targetRefs or workloadSelector can be set'],
  },
  {
    rule: 'DENY without rules',
    yaml: 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  action: DENY\n',
    expect: ['error spec: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request'],
  },
  {
    rule: 'authorization sources, ports and conditions',
    yaml: 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.0/33]}\n    to:\n    - operation: {ports: ["80", "http"]}\n    when:\n    - key: request.header[x-id]\n      values: [a]\n',
    expect: [
      'error spec.rules[0].from[0].source.ipBlocks[0]: bad CIDR range (10.0.0.0/33)',
      'error spec.rules[0].to[0].operation.ports[1]: bad port (http)',
      'error spec.rules[0].when[0].values: invalid `value` for `key` request.header[x-id]: unknown attribute: request.header[x-id]',
    ],
  },
  {
    rule: 'an allow-nothing policy is valid',
    yaml: 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing}\nspec: {}\n',
    expect: [],
  },
];

t.test('Istio semantic rules', async (t) => {
  for (const c of rules) {
    t.test(c.rule, async (t) => {
      t.same(brief(validate(c.yaml)), c.expect);
    });
  }
});

t.test('semantic issues point at their field line', async (t) => {
  const issues = validate(
    [
      'apiVersion: networking.istio.io/v1', // 1
      'kind: DestinationRule', //              2
      'metadata: {name: dr}', //               3
      'spec:', //                              4
      '  host: reviews', //                    5
      '  trafficPolicy:', //                   6
      '    connectionPool:', //                7
      '      tcp:', //                         8
      '        connectTimeout: 10x', //        9
      '',
    ].join('\n'),
  );
  t.same(
    issues.map((i) => `${i.line} ${i.path}`),
    ['9 spec.trafficPolicy.connectionPool.tcp.connectTimeout'],
  );
});

t.test('deprecated settings give warnings, not errors', async (t) => {
  const issues = validate(dr('  trafficPolicy:\n    outlierDetection: {consecutiveErrors: 5}\n'));
  t.same(brief(issues), [
    'warning spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead',
  ]);
});
