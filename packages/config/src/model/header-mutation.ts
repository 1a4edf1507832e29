import type { HeaderMutation } from './route.ts';

/**
 * Header edits applied one after the other, as Envoy applies a list of levels (each level
 * removes, then adds), folded into one mutation (which removes, then sets, then appends): a
 * later level's remove or set of a header cancels what earlier levels set or appended for it.
 * Null when no level has edits.
 */
export function foldHeaderMutations(list: readonly (HeaderMutation | null)[]): HeaderMutation | null {
  const present = list.filter((m): m is HeaderMutation => m !== null);
  if (present.length === 0) return null;
  if (present.length === 1) return present[0]!;
  let set: (readonly [string, string])[] = [];
  let add: (readonly [string, string])[] = [];
  const remove: string[] = [];
  for (const m of present) {
    const overridden = new Set([...m.remove, ...m.set.map(([k]) => k)]);
    set = set.filter(([k]) => !overridden.has(k));
    add = add.filter(([k]) => !overridden.has(k));
    for (const k of m.remove) if (!remove.includes(k)) remove.push(k);
    set.push(...m.set);
    add.push(...m.add);
  }
  return { set, add, remove };
}
