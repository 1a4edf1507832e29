/**
 * Go's `text/tabwriter` with a space pad character and no flags, the way istioctl aligns its
 * tables: text is cells ended by `\t` (or `\v`), lines ended by `\n` (or `\f`). A column is a run
 * of adjacent lines that all have a cell in it; its width is the widest cell (in code points)
 * plus `padding`, at least `minWidth`. The last cell of a line belongs to no column and is
 * written as is, so an empty trailing cell leaves the previous column's padding behind.
 */
export interface TabWriterOptions {
  readonly minWidth: number;
  readonly padding: number;
}

interface Cell {
  readonly text: string;
  readonly width: number;
}

const CELL_END = /[\t\v]/;

/** Formats `text` as `tabwriter.NewWriter(w, minWidth, _, padding, ' ', 0)` then `Flush()` would. */
export function tabWrite(text: string, opts: TabWriterOptions): string {
  const rows = text.split(/[\n\f]/);
  const lines: Cell[][] = rows.map((row) => row.split(CELL_END).map((cell) => ({ text: cell, width: codePoints(cell) })));
  const out: string[] = [];
  new Formatter(lines, opts, out).format(0, lines.length);
  return out.join('');
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** The recursive column-block layout of Go's `(*Writer).format`, over lines already split into cells. */
class Formatter {
  readonly #lines: readonly Cell[][];
  readonly #opts: TabWriterOptions;
  readonly #out: string[];
  /** Widths of the columns to the left of the one being laid out. */
  readonly #widths: number[] = [];

  constructor(lines: readonly Cell[][], opts: TabWriterOptions, out: string[]) {
    this.#lines = lines;
    this.#opts = opts;
    this.#out = out;
  }

  format(line0: number, line1: number): void {
    const column = this.#widths.length;
    for (let line = line0; line < line1; line++) {
      if (column >= this.#cells(line).length - 1) continue;
      // A cell in this column: write what came before, then size the block of lines that have one.
      this.#writeLines(line0, line);
      line0 = line;
      let width = this.#opts.minWidth;
      for (; line < line1; line++) {
        const cells = this.#cells(line);
        if (column >= cells.length - 1) break;
        width = Math.max(width, cells[column]!.width + this.#opts.padding);
      }
      this.#widths.push(width);
      this.format(line0, line);
      this.#widths.pop();
      line0 = line;
    }
    this.#writeLines(line0, line1);
  }

  #cells(line: number): readonly Cell[] {
    return this.#lines[line]!;
  }

  #writeLines(line0: number, line1: number): void {
    for (let i = line0; i < line1; i++) {
      const cells = this.#cells(i);
      for (let j = 0; j < cells.length; j++) {
        const cell = cells[j]!;
        this.#out.push(cell.text);
        const width = this.#widths[j];
        if (width !== undefined && width > cell.width) this.#out.push(' '.repeat(width - cell.width));
      }
      if (i + 1 < this.#lines.length) this.#out.push('\n');
    }
  }
}
