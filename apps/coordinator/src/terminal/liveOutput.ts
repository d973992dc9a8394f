/**
 * One live line (the progress bar) at the bottom of a terminal, with ordinary lines scrolling
 * above it. Every line the process prints while the bar is up goes through {@link LiveOutput}'s
 * streams: the bar is erased first, the line written, the bar drawn again below it. Written
 * straight to the terminal, a log line would land in the middle of the bar and the next redraw
 * would leave half of it behind.
 */

/** A stream that takes text (process.stdout, process.stderr, or a test's fake). */
export interface TextStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Options of {@link createLiveOutput}. */
export interface LiveOutputOptions {
  stdout: TextStream;
  /** Where the live line is drawn, when it is a terminal. */
  stderr: TextStream;
}

/** The streams to print through, and the live line. */
export interface LiveOutput {
  /** stdout and stderr, wrapped: each write erases the live line first and redraws it after. */
  readonly stdout: { write(chunk: string): unknown };
  readonly stderr: { write(chunk: string): unknown };
  /** True when stderr is a terminal, so a live line can be drawn on it. */
  readonly live: boolean;
  /** The terminal's width in columns (80 when it does not say). */
  columns(): number;
  /** Draws `text` (one line, no newline) as the live line; `undefined` erases it for good. */
  setLine(text: string | undefined): void;
}

/** Erase the whole current line and return to its start (CSI 2 K after a carriage return). */
const ERASE_LINE = '\r\x1b[2K';

/** Creates a {@link LiveOutput} over `options`' streams. */
export function createLiveOutput(options: LiveOutputOptions): LiveOutput {
  const { stdout, stderr } = options;
  const live = stderr.isTTY === true;
  let line: string | undefined;
  let shown = false;
  // Text written without its newline yet (a partial line): the bar waits below nothing until
  // the line is complete, or it would be drawn onto the end of that line.
  let openLine = false;

  const erase = () => {
    if (shown) stderr.write(ERASE_LINE);
    shown = false;
  };
  const draw = () => {
    if (!live || line === undefined || openLine || shown) return;
    stderr.write(`${ERASE_LINE}${line}`);
    shown = true;
  };
  const through = (stream: TextStream) => ({
    write(chunk: string) {
      if (!live) return stream.write(chunk);
      erase();
      const result = stream.write(chunk);
      if (chunk.length > 0) openLine = !chunk.endsWith('\n');
      draw();
      return result;
    },
  });

  return {
    stdout: through(stdout),
    stderr: through(stderr),
    live,
    columns: () => (stderr.columns !== undefined && stderr.columns > 0 ? stderr.columns : 80),
    setLine(text) {
      if (!live) return;
      if (text === undefined) {
        erase();
        line = undefined;
        return;
      }
      if (text === line && shown) return;
      line = text;
      // draw() starts with the erase; no need to erase the old line separately.
      shown = false;
      draw();
    },
  };
}
