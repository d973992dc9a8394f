/**
 * Plain-text tables for the CLI: a confusion matrix and a per-class report in the layout of
 * scikit-learn's `classification_report`.
 */
import type { ClassificationReport } from './classification.js';
import { type ClassScores, matrixToCounts } from './confusion.js';
import { invalidArgument, requireInteger, resolveClassNames } from './validation.js';

type Align = 'left' | 'right';

/**
 * Renders a confusion matrix as a text table. Rows are true classes, labelled with index and
 * name; columns are predicted classes, labelled with the index only, so ten classes with long
 * names still fit in a terminal.
 *
 * @example
 * ```ts
 * formatConfusionMatrix([[5, 1], [0, 4]], { classNames: ['cat', 'dog'] });
 * // true \ pred  0  1
 * // 0 cat        5  1
 * // 1 dog        0  4
 * ```
 */
export function formatConfusionMatrix(
  matrix: readonly (readonly number[])[],
  options: { classNames?: readonly string[] } = {},
): string {
  const n = Math.round(Math.sqrt(matrixToCounts(matrix).length));
  const names =
    options.classNames === undefined ? undefined : resolveClassNames(options.classNames, n);
  const header = ['true \\ pred', ...Array.from({ length: n }, (_, p) => String(p))];
  const rows = matrix.map((row, t) => [
    names === undefined ? String(t) : `${t} ${names[t]}`,
    ...row.map(String),
  ]);
  return renderTable([header, ...rows], ['left', ...Array<Align>(n).fill('right')]);
}

/**
 * Renders per-class precision, recall, F1 and support, then accuracy, the macro and weighted
 * averages, and (when the input has them, as a {@link ClassificationReport} does) the loss, the
 * reported loss and the top-k accuracies.
 *
 * @example
 * ```ts
 * console.log(formatClassificationReport(accumulator.result(), { digits: 3 }));
 * //               precision  recall  f1-score  support
 * // 0 T-shirt/top     0.850   0.860     0.855     1000
 * // ...
 * ```
 */
export function formatClassificationReport(
  report: ClassScores & Partial<Pick<ClassificationReport, 'loss' | 'reportedLoss' | 'topK'>>,
  options: {
    /** Digits after the decimal point (default 4). */
    digits?: number;
  } = {},
): string {
  if (typeof report !== 'object' || report === null || !Array.isArray(report.perClass)) {
    invalidArgument(
      'formatClassificationReport expects the result of an accumulator or of precisionRecallF1 ' +
        '(an object with perClass, macro, weighted, accuracy and count).',
    );
  }
  const digits = requireInteger('digits', options.digits ?? 4, 0, 20);
  const f = (v: number): string => v.toFixed(digits);
  const count = String(report.count);
  const rows: (string[] | null)[] = [['', 'precision', 'recall', 'f1-score', 'support']];
  for (const c of report.perClass) {
    // Names that are just the index would print "3 3"; show them once.
    const label = c.name === String(c.index) ? c.name : `${c.index} ${c.name}`;
    rows.push([label, f(c.precision), f(c.recall), f(c.f1), String(c.support)]);
  }
  rows.push(null);
  rows.push(['accuracy', '', '', f(report.accuracy), count]);
  rows.push([
    'macro avg',
    f(report.macro.precision),
    f(report.macro.recall),
    f(report.macro.f1),
    count,
  ]);
  rows.push([
    'weighted avg',
    f(report.weighted.precision),
    f(report.weighted.recall),
    f(report.weighted.f1),
    count,
  ]);
  const extra: string[][] = [];
  if (report.loss !== undefined) extra.push(['loss', f(report.loss)]);
  if (report.reportedLoss !== undefined && report.reportedLoss !== null) {
    extra.push(['reported loss', f(report.reportedLoss.mean)]);
  }
  for (const { k, accuracy } of report.topK ?? []) extra.push([`top-${k} accuracy`, f(accuracy)]);
  if (extra.length > 0) {
    rows.push(null);
    // Values share the f1-score column with accuracy, so all single numbers line up.
    for (const [label, value] of extra) rows.push([label!, '', '', value!, '']);
  }
  return renderTable(rows, ['left', 'right', 'right', 'right', 'right']);
}

/**
 * Pads cells into aligned columns two spaces apart; `null` rows print as blank lines.
 * Trailing spaces are trimmed so the output diffs cleanly.
 */
function renderTable(rows: readonly (readonly string[] | null)[], align: readonly Align[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row?.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row === null
        ? ''
        : row
            .map((cell, i) =>
              align[i] === 'left' ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!),
            )
            .join('  ')
            .trimEnd(),
    )
    .join('\n');
}
