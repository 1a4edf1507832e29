// The one error the harness expects to show a person: a bad flag or a missing tool, printed
// without a stack trace.
export class UsageError extends Error {}

/** The message to print for an error that ends the bench. */
export function describeFailure(err: unknown): string {
  if (err instanceof UsageError) return `${err.message}\n`;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) return `${(err as Error).message} (see --help)\n`;
  if (!(err instanceof Error)) return `${String(err)}\n`;
  // The harness's own failures say what went wrong; the stack is for debugging it.
  return `${process.env.BENCH_DEBUG ? (err.stack ?? err.message) : err.message}\n`;
}
