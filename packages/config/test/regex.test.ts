// Config regexes on RE2: Envoy's safe_regex full match, and regex_rewrite as RE2::GlobalReplace
// applies it (substitution syntax, empty matches), compiled once.
import t from 'tap';
import { Regex, RegexRewrite, RegexSyntaxError } from '@remora/config';

t.test('matchesAll is a full match; matchesPart searches', async (t) => {
  const re = new Regex('/api/v[0-9]+/.*');
  t.ok(re.matchesAll('/api/v2/users'));
  t.notOk(re.matchesAll('/x/api/v2/users'), 'anchored at the start');
  t.notOk(new Regex('/items/[0-9]+').matchesAll('/items/42x'), 'anchored at the end');
  t.ok(new Regex('v[0-9]+').matchesPart('/api/v2/x'));
  t.ok(new Regex('/api/.*', { ignoreCase: true }).matchesAll('/API/X'), 'ignoreCase folds');
  t.notOk(new Regex('a.b').matchesAll('a\nb'), 'dot does not match a newline (RE2 default)');
  t.ok(new Regex('(?i)/Api').matchesAll('/aPI'), 'RE2 inline flags');
});

t.test('a pattern RE2 cannot compile throws RegexSyntaxError with RE2\'s reason', async (t) => {
  t.throws(() => new Regex('(a'), new RegexSyntaxError('(a', 'missing closing ): `(a`'));
  t.throws(() => new Regex('a(?=b)'), RegexSyntaxError);
  t.throws(() => new RegexRewrite('(a', '/'), RegexSyntaxError);
});

t.test('RegexRewrite: RE2::GlobalReplace semantics', async (t) => {
  const cases: [pattern: string, substitution: string, input: string, want: string][] = [
    ['^/users/([0-9]+)/profile$', '/profiles/\\1', '/users/42/profile', '/profiles/42'],
    ['^/api/(.*)$', '/\\1', '/api/a/b', '/a/b'],
    ['/v1/', '/v2/', '/v1/a/v1/b', '/v2/a/v2/b'],
    ['b+', '[\\0]', 'abbcb', 'a[bb]c[b]'],
    ['(x)?b', '<\\1>', 'ab', 'a<>'],
    ['a', '$&$1\\\\', 'xa', 'x$&$1\\'],
    ['a*', '-', 'baaac', '-b-c-'],
    ['x*', '-', 'abc', '-a-b-c-'],
    ['zzz', '-', '/path', '/path'],
  ];
  for (const [pattern, substitution, input, want] of cases) {
    t.equal(new RegexRewrite(pattern, substitution).apply(input), want, `${pattern} → ${substitution} on ${input}`);
  }
});

t.test('RegexRewrite refuses substitutions RE2 cannot apply', async (t) => {
  t.throws(() => new RegexRewrite('^/(a)$', '/\\2'), /\\2 but the pattern has 1 capture group/);
  t.throws(() => new RegexRewrite('^/a$', '/\\x'), /\\x is not \\0-\\9 or \\\\/);
  t.throws(() => new RegexRewrite('^/a$', '/\\'), /is not \\0-\\9/);
});
