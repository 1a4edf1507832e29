/**
 * Remora's own log (not the access log): Envoy-style lines on stderr,
 * `[2024-05-01T10:00:00.000Z][info][config] message`, with a level per component that
 * `/logging` can change at run time.
 */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warning', 'error', 'critical', 'off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const rank = (l: LogLevel): number => LOG_LEVELS.indexOf(l);

export class Logger {
  readonly component: string;
  #level: number;
  readonly #out: (line: string) => void;

  constructor(component: string, level: LogLevel, out: (line: string) => void) {
    this.component = component;
    this.#level = rank(level);
    this.#out = out;
  }

  get level(): LogLevel {
    return LOG_LEVELS[this.#level]!;
  }

  set level(l: LogLevel) {
    this.#level = rank(l);
  }

  enabled(l: LogLevel): boolean {
    return rank(l) >= this.#level;
  }

  log(l: LogLevel, msg: string): void {
    if (rank(l) < this.#level) return;
    this.#out(`[${new Date().toISOString()}][${l}][${this.component}] ${msg}\n`);
  }

  debug(msg: string): void {
    this.log('debug', msg);
  }
  info(msg: string): void {
    this.log('info', msg);
  }
  warn(msg: string): void {
    this.log('warning', msg);
  }
  error(msg: string): void {
    this.log('error', msg);
  }
}

/** The components that log, each with its own level (Envoy's logger names where they exist). */
export const LOG_COMPONENTS = ['main', 'config', 'admin', 'upstream', 'router', 'http', 'dns', 'secret', 'connection', 'rbac', 'tracing'] as const;
export type LogComponent = (typeof LOG_COMPONENTS)[number];

export class Loggers {
  readonly #byName = new Map<string, Logger>();

  constructor(level: LogLevel, out: (line: string) => void = (line) => process.stderr.write(line)) {
    for (const c of LOG_COMPONENTS) this.#byName.set(c, new Logger(c, level, out));
  }

  get(c: LogComponent): Logger {
    return this.#byName.get(c)!;
  }

  all(): IterableIterator<Logger> {
    return this.#byName.values();
  }

  byName(name: string): Logger | undefined {
    return this.#byName.get(name);
  }

  setAll(level: LogLevel): void {
    for (const l of this.#byName.values()) l.level = level;
  }
}

export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}
