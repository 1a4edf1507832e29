/**
 * Tests run from the TypeScript sources: the `tap` script sets the `remora-source` export
 * condition in NODE_OPTIONS (every process a test starts inherits it), so `@remora/*` resolve
 * to `src/` and no `tsc -b` is needed first. Run without it, they use the built `dist/`.
 */
export const FROM_SOURCE =
  /(^|[\s"])(--conditions[= ]|-C ?)remora-source([\s"]|$)/.test(process.env.NODE_OPTIONS ?? '') || process.execArgv.includes('--conditions=remora-source');

/** NODE_OPTIONS for a process started with an environment of its own (not inheriting this one's). */
export const SOURCE_NODE_OPTIONS: NodeJS.ProcessEnv = FROM_SOURCE ? { NODE_OPTIONS: '--conditions=remora-source' } : {};
