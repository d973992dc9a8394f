/**
 * Numbers as people read them in the text reporter's lines: a loss to 4 significant digits, an
 * accuracy in percent, a throughput as a whole number, a duration as m:ss. Machines get the
 * unrounded values from `--log-format json` and summary.json, never from these.
 */

/**
 * A loss to 4 significant digits ("0.4123", "2.303", "12.35"), which tells two epochs apart
 * without printing float noise; "NaN" or "Infinity" as they are, since those are the news.
 *
 * @example
 * ```ts
 * formatLoss(0.41234567); // '0.4123'
 * ```
 */
export function formatLoss(loss: number): string {
  if (!Number.isFinite(loss)) return String(loss);
  const text = loss.toPrecision(4);
  // toPrecision switches to exponent notation below 1e-6 and at 1e4 or more; both are fine to
  // read, but "1.000e+4" is not how anyone writes 10000.
  return Math.abs(loss) >= 1e4 && Math.abs(loss) < 1e21 ? Math.round(loss).toString() : text;
}

/**
 * A fraction (0.851234) as a percentage with `decimals` decimals ("85.12%"): 1 in the live bar,
 * where it moves every step, 2 in summary lines, where two epochs are compared.
 */
export function formatPercent(fraction: number, decimals = 2): string {
  if (!Number.isFinite(fraction)) return String(fraction);
  return `${(fraction * 100).toFixed(decimals)}%`;
}

/** A count with thousands separators ("60,000"). */
export function formatCount(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** A throughput as a whole number of images per second ("312 img/s"). */
export function formatRate(imagesPerSecond: number): string {
  if (!Number.isFinite(imagesPerSecond)) return '- img/s';
  return `${formatCount(imagesPerSecond)} img/s`;
}

/**
 * A duration as m:ss, or h:mm:ss from an hour ("0:41", "3:52", "1:02:05"), the way Keras and
 * most progress bars print an ETA; "-:--" while it is unknown.
 */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '-:--';
  const whole = Math.round(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = whole % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/**
 * A short duration for a summary ("850ms", "41s", "3m 12s", "1h 02m"): an epoch's time and a
 * step's mean.
 */
export function formatElapsed(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)}s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${String(whole % 60).padStart(2, '0')}s`;
  return `${Math.floor(whole / 3600)}h ${String(Math.floor((whole % 3600) / 60)).padStart(2, '0')}m`;
}

/** `n word` with an s when n is not 1 ("1 epoch", "2,000 steps"). */
export function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
}
