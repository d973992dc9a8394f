/**
 * Checks one invocation of a Shardline CLI (its arguments and its environment, as a manifest,
 * a unit, an env file, a Containerfile or a documented command passes them) against the CLI's
 * spec read from `--help`. Returns problems as sentences that name the file, the flag or
 * variable, and what the CLI offers instead; an empty list means the invocation is valid.
 */
import type { CliName, CommandSpec, OptionSpec } from './cliSpec.js';

/** A CLI run that some deployment file sets up. */
export interface Invocation {
  /** Where it comes from, for messages: `deploy/systemd/shardline-worker.service:42`. */
  where: string;
  cli: CliName;
  /** The arguments after the executable (for the coordinator, usually starting with `train`). */
  argv: string[];
  /** Variables set for it; `undefined` values come from elsewhere (a Secret, a field). */
  env: Record<string, string | undefined>;
}

/**
 * Values that a shell, Kubernetes or systemd fills in later (`$(POD_NAME)`, `${X}`, `"$(cat
 * token)"`, `%S/...`): their final text is unknown here, so only their presence is checked.
 */
export function isDeferred(value: string): boolean {
  return /\$\(|\$\{|\$[A-Za-z_]|%[a-zA-Z]/.test(value);
}

/** Edit distance, to suggest the flag or variable that was probably meant. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const saved = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = saved;
    }
  }
  return row[b.length]!;
}

function suggest(word: string, candidates: Iterable<string>): string {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = distance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 4))
    ? ` Did you mean ${best}?`
    : '';
}

function checkChoice(
  where: string,
  what: string,
  option: OptionSpec,
  value: string,
  problems: string[],
): void {
  if (!option.choices || isDeferred(value)) return;
  if (!option.choices.includes(value)) {
    problems.push(
      `${where}: ${what} is "${value}", which ${option.long} does not accept: expected one of ${option.choices.join(', ')}.`,
    );
  }
}

/** The problems of `argv` against `spec` (a command and its subcommands). */
function checkArgv(where: string, cli: CliName, root: CommandSpec, argv: string[]): string[] {
  const problems: string[] = [];
  let command = root;
  let sawOption = false;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === '--') {
      problems.push(`${where}: "--" passes positional arguments, which ${cli} takes none of.`);
      break;
    }
    if (!token.startsWith('-') || token === '-') {
      const sub = command.subcommands.get(token);
      if (sub && !sawOption) {
        command = sub;
        continue;
      }
      problems.push(
        `${where}: unexpected argument "${token}" for ${command.name}: it takes no positional arguments` +
          (command.subcommands.size > 0
            ? ` (commands: ${[...command.subcommands.keys()].join(', ')})`
            : '') +
          '.' +
          suggest(token, command.subcommands.keys()),
      );
      continue;
    }
    sawOption = true;
    const eq = token.indexOf('=');
    const flag = token.startsWith('--') && eq > 0 ? token.slice(0, eq) : token;
    const inline = token.startsWith('--') && eq > 0 ? token.slice(eq + 1) : undefined;
    const option =
      command.options.get(flag) ?? [...command.options.values()].find((o) => o.short === flag);
    if (!option) {
      problems.push(
        `${where}: ${command.name} has no option ${flag}.${suggest(flag, command.options.keys())}`,
      );
      // What follows is most likely its value: one problem per mistake, not two.
      const next = argv[i + 1];
      if (inline === undefined && next !== undefined && !next.startsWith('-')) i++;
      continue;
    }
    if (option.value === 'none') {
      if (inline !== undefined) {
        problems.push(`${where}: ${flag} is a switch and takes no value, found "${token}".`);
      }
      continue;
    }
    let value = inline;
    if (value === undefined && option.value === 'required') {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && !isDeferred(next))) {
        problems.push(`${where}: ${flag} needs a value and has none.`);
        continue;
      }
      value = next;
      i++;
    }
    if (value !== undefined) checkChoice(where, flag, option, value, problems);
  }
  return problems;
}

/** The problems of the SHARDLINE_* variables of `env` against `spec`. */
function checkEnv(
  where: string,
  cli: CliName,
  spec: CommandSpec,
  env: Record<string, string | undefined>,
): string[] {
  const problems: string[] = [];
  const all = (s: CommandSpec): CommandSpec[] => [s, ...[...s.subcommands.values()].flatMap(all)];
  const commands = all(spec);
  const known = new Set(commands.flatMap((c) => [...c.envOptions.keys(), ...c.mentionedEnv]));
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('SHARDLINE_')) continue;
    if (!known.has(name)) {
      problems.push(
        `${where}: ${cli} reads no variable ${name} (its --help names ${[...known].sort().join(', ')}).${suggest(name, known)}`,
      );
      continue;
    }
    const option = commands.map((c) => c.envOptions.get(name)).find((o) => o !== undefined);
    if (value === undefined || option === undefined) continue;
    if (option.value === 'none') {
      const words = commands.find((c) => c.switchWords)?.switchWords;
      if (words && !isDeferred(value) && !words.includes(value.toLowerCase())) {
        problems.push(
          `${where}: ${name}="${value}" sets the switch ${option.long}: expected one of ${words.join(', ')}.`,
        );
      }
      continue;
    }
    checkChoice(where, name, option, value, problems);
  }
  return problems;
}

/** Every problem of `invocation`; none when the CLI accepts it. */
export function checkInvocation(
  invocation: Invocation,
  specs: Record<CliName, CommandSpec>,
): string[] {
  const spec = specs[invocation.cli];
  return [
    ...checkArgv(invocation.where, invocation.cli, spec, invocation.argv),
    ...checkEnv(invocation.where, invocation.cli, spec, invocation.env),
  ];
}
