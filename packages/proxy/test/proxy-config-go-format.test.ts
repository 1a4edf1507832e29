// The two pieces of Go that shape istioctl's tables: text/tabwriter's column layout and
// sort.Slice's (unstable) order. The expected outputs were produced by Go's own
// text/tabwriter and sort.Slice (Go 1.19, the pdqsort that later Go releases keep) on the same
// inputs.
import t from 'tap';
import { goSortSlice, tabWrite } from '@remora/proxy';

t.test("tabWrite lays out columns as Go's tabwriter (minwidth 0, space padding, no flags)", async (t) => {
  t.equal(
    tabWrite(
      'NAME\tSTATUS\tLOCALITY\tCLUSTER\n10.0.0.1:80\tHEALTHY\t\tout|80||a\nb\n日本:1\tUNHEALTHY\tus/east\tc\nsingle cell line\nx\ty\t\n\tonly-second\tz\n',
      { minWidth: 0, padding: 5 },
    ),
    'NAME            STATUS      LOCALITY     CLUSTER\n10.0.0.1:80     HEALTHY                  out|80||a\nb\n日本:1     UNHEALTHY     us/east     c\nsingle cell line\nx     y               \n      only-second     z\n',
    'a line without tabs ends the column block; widths count code points; an empty last cell keeps the padding',
  );
  t.equal(
    tabWrite('a\tbbb\tc\naaaa\tb\nno tabs here\naa\tb\tccccc\td\n', { minWidth: 0, padding: 1 }),
    'a    bbb c\naaaa b\nno tabs here\naa b ccccc d\n',
    'the last cell of a line belongs to no column',
  );
  t.equal(tabWrite('', { minWidth: 0, padding: 5 }), '');
  t.equal(tabWrite('a\tb\n', { minWidth: 8, padding: 1 }), 'a       b\n', 'minWidth');
});

t.test("goSortSlice leaves equal rows where Go's sort.Slice leaves them", async (t) => {
  const rows = Array.from({ length: 100 }, (_, id) => ({ key: (id * id * 31 + 7 * id) % 5, id }));
  goSortSlice(rows, (a, b) => a.key < b.key);
  t.same(
    rows.map((r) => r.id),
    [
      40, 98, 95, 3, 93, 5, 90, 88, 8, 85, 10, 83, 80, 13, 78, 15, 75, 73, 18, 70, 20, 68, 65, 23, 63, 25, 60, 58, 28, 55, 30, 53, 0, 33, 50, 35, 48, 45, 38, 43, 51,
      91, 42, 1, 97, 37, 46, 47, 36, 96, 2, 32, 52, 31, 41, 92, 56, 57, 27, 12, 26, 61, 62, 6, 7, 22, 66, 67, 21, 87, 86, 71, 72, 17, 11, 16, 76, 77, 82, 81, 54, 79,
      14, 74, 84, 9, 19, 69, 64, 89, 24, 59, 29, 4, 94, 34, 49, 44, 39, 99,
    ],
  );
  const stable = Array.from({ length: 100 }, (_, id) => ({ key: (id * id * 31 + 7 * id) % 5, id })).sort((a, b) => a.key - b.key);
  t.not(stable.map((r) => r.id).join(), rows.map((r) => r.id).join(), 'which is not what a stable sort gives');
});

t.test("goSortSlice follows Go with istioctl's route comparison, which is not a strict order", async (t) => {
  // istioctl: numeric route names (ports) ascending; any other name compares false both ways.
  const words = ['80', '9080', '15010', 'InboundPassthroughCluster', 'inbound|8080||', '443', 'kube-dns.kube-system.svc.cluster.local:9153', '7'];
  const routes = Array.from({ length: 60 }, (_, id) => ({ name: words[(id * id * 3 + id * 7 + 1) % words.length]!, id }));
  const numeric = (s: string): number | null => (/^[+-]?\d+$/.test(s) ? Number(s) : null);
  goSortSlice(routes, (a, b) => {
    const i = numeric(a.name);
    const j = numeric(b.name);
    return i !== null && j !== null && i < j;
  });
  t.same(
    routes.map((r) => r.id),
    [
      46, 14, 54, 53, 29, 5, 6, 45, 38, 37, 30, 22, 21, 13, 15, 9, 16, 17, 18, 19, 20, 12, 11, 23, 24, 25, 26, 27, 57, 4, 10, 31, 32, 33, 34, 35, 36, 1, 8, 39, 40, 41,
      42, 43, 44, 7, 0, 47, 48, 49, 50, 51, 52, 3, 2, 55, 56, 28, 58, 59,
    ],
  );
});

t.test('goSortSlice sorts (short, long, reversed, empty)', async (t) => {
  for (const n of [0, 1, 5, 12, 13, 49, 50, 51, 500]) {
    const desc = Array.from({ length: n }, (_, i) => n - i);
    goSortSlice(desc, (a, b) => a < b);
    t.same(desc, Array.from({ length: n }, (_, i) => i + 1), `${n} descending numbers`);
    const mixed = Array.from({ length: n }, (_, i) => (i * 7919) % 101);
    goSortSlice(mixed, (a, b) => a < b);
    t.same(mixed, [...mixed].sort((a, b) => a - b), `${n} mixed numbers`);
  }
});
