/**
 * `shardline-coordinator report <out-dir>`: rebuilds a run's report.html and plots/*.svg from
 * the files the run left (events.jsonl, summary.json). For a report that failed at the end of a
 * run, a run that stopped before the end (the report then shows it as unfinished), or a report
 * made by an older release.
 */
import type { Command } from 'commander';
import type { ReporterStreams } from '../reporter.js';
import { writeRunReport } from './report.js';

/**
 * Adds `report`. Prints where the report and plots went (one JSON object with `--json`); a
 * folder that is not a run fails with what was expected and found.
 *
 * @example
 * ```sh
 * shardline-coordinator report runs/fashion
 * ```
 */
export function addReportCommand(program: Command, streams: ReporterStreams): void {
  program
    .command('report')
    .description(
      "Rebuild a run's report.html and plots/*.svg from its --out folder (events.jsonl, summary.json).",
    )
    .argument('<out-dir>', 'the --out folder of a training run')
    .option('--json', 'print the paths written as JSON on stdout')
    .action(async (out: string, flags: { json?: boolean }) => {
      const written = await writeRunReport(out);
      if (flags.json) {
        streams.stdout.write(
          `${JSON.stringify({ report_path: written.reportPath, plot_paths: written.plotPaths, damaged_lines: written.badLines })}\n`,
        );
        return;
      }
      if (written.badLines.length > 0) {
        streams.stderr.write(
          `shardline-coordinator: warning: ${written.badLines.length} damaged lines of events.jsonl were left out (${written.badLines.slice(0, 5).join(', ')}).\n`,
        );
      }
      streams.stdout.write(
        `Wrote ${written.reportPath} and ${written.plotPaths.length} plots in ${out}/plots.\n`,
      );
    });
}
