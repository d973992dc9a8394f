// Numbers rounded for people, the way the terminal's progress line rounds them
// (src/terminal/format.ts; repeated here because the page loads as is, with no build step).
// A dashboard is read at a glance: /api/state has the unrounded values.

const DASH = '–';

/** Whether `x` is a number worth showing. */
export const isNumber = (x) => typeof x === 'number' && Number.isFinite(x);

/** 12,345 */
export function formatCount(n) {
  return isNumber(n) ? Math.round(n).toLocaleString('en-US') : DASH;
}

/** 0.8731 -> "87.3%" */
export function formatPercent(fraction, digits = 1) {
  return isNumber(fraction) ? `${(fraction * 100).toFixed(digits)}%` : DASH;
}

/** A loss to 4 significant digits ("0.4123", "2.303"). */
export function formatLoss(x) {
  return isNumber(x) ? x.toPrecision(4) : DASH;
}

/** A short time to 3 significant digits: "4.20 ms", "77.8 ms", "135 ms", "1.35 s". */
export function formatSeconds(s) {
  if (!isNumber(s)) return DASH;
  if (s < 0.01) return `${(s * 1000).toFixed(2)} ms`;
  if (s < 0.1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  return `${s.toFixed(2)} s`;
}

/** An ETA as m:ss, or h:mm:ss from an hour ("0:41", "1:02:05"), as progress bars print it. */
export function formatDuration(seconds) {
  if (!isNumber(seconds) || seconds < 0) return '-:--';
  const whole = Math.round(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const ss = String(whole % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
