/**
 * Finds the Shardline CLI invocations in deployment files: Kubernetes objects and patches,
 * systemd units and their environment files, Containerfiles, and the shell commands of
 * Markdown code blocks. Each extractor returns {@link Invocation}s for checkInvocation.ts, and
 * problems of its own for what it cannot read (which would otherwise escape the check).
 */
import { parseAllDocuments } from 'yaml';
import type { Invocation } from './checkInvocation.js';
import type { CliName } from './cliSpec.js';

/** Invocations found, and what could not be checked. */
export interface Extracted {
  invocations: Invocation[];
  problems: string[];
}

/** Parses every YAML document of a file; syntax errors become problems. */
export function parseYaml(text: string, where: string): { docs: unknown[]; problems: string[] } {
  const problems: string[] = [];
  const docs: unknown[] = [];
  for (const doc of parseAllDocuments(text)) {
    for (const error of doc.errors) problems.push(`${where}: ${error.message}`);
    if (doc.errors.length === 0) docs.push(doc.toJS());
  }
  return { docs, problems };
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The executables that are Shardline CLIs, and the arguments they imply. */
const EXECUTABLES: Record<string, { cli: CliName; prefix: string[] }> = {
  'shardline-worker': { cli: 'shardline-worker', prefix: [] },
  'shardline-coordinator': { cli: 'shardline-coordinator', prefix: [] },
  // deploy/bin/shardline-coordinator-job runs `shardline-coordinator train <its arguments>`.
  'shardline-coordinator-job': { cli: 'shardline-coordinator', prefix: ['train'] },
};

const basename = (path: string) => path.slice(path.lastIndexOf('/') + 1);

/** The CLI an executable path names, if it is one. */
export function cliOfExecutable(path: string): { cli: CliName; prefix: string[] } | undefined {
  return EXECUTABLES[basename(path)];
}

/**
 * The CLI a container runs: from its command, else from its image's entrypoint (the images of
 * deploy/containers are named after what they run), else from its name (patches carry neither
 * command nor image). `unknown` for a container that looks like Shardline's but cannot be told.
 */
function containerCli(container: Json): { cli: CliName; prefix: string[] } | 'other' | 'unknown' {
  const command = container.command;
  if (Array.isArray(command) && typeof command[0] === 'string') {
    return cliOfExecutable(command[0]) ?? 'other';
  }
  const image = typeof container.image === 'string' ? container.image : undefined;
  if (image !== undefined) {
    const repository = basename(image.replace(/[:@].*$/, ''));
    if (/coordinator/.test(repository)) return { cli: 'shardline-coordinator', prefix: [] };
    if (/worker/.test(repository)) return { cli: 'shardline-worker', prefix: [] };
    return /shardline/.test(image) ? 'unknown' : 'other';
  }
  if (container.name === 'coordinator') return { cli: 'shardline-coordinator', prefix: [] };
  if (container.name === 'worker') return { cli: 'shardline-worker', prefix: [] };
  return 'unknown';
}

/** Every object under `node` that has a `containers` list (pod specs, wherever they sit). */
function podSpecs(node: unknown, found: Json[] = []): Json[] {
  if (Array.isArray(node)) for (const item of node) podSpecs(item, found);
  else if (isObject(node)) {
    if (Array.isArray(node.containers)) found.push(node);
    for (const value of Object.values(node)) podSpecs(value, found);
  }
  return found;
}

/** The CLI of container `index` of the first pod spec of a Kubernetes object. */
export function cliOfResourceContainer(
  resource: unknown,
  index: number,
): { cli: CliName; prefix: string[] } | undefined {
  const spec = podSpecs(resource)[0];
  const container = spec && (spec.containers as unknown[])[index];
  if (!isObject(container)) return undefined;
  const cli = containerCli(container);
  return typeof cli === 'object' ? cli : undefined;
}

/** Invocations of the containers of Kubernetes objects (whole resources or strategic-merge patches). */
export function kubernetesInvocations(docs: unknown[], where: string): Extracted {
  const invocations: Invocation[] = [];
  const problems: string[] = [];
  for (const doc of docs) {
    const name = isObject(doc) && isObject(doc.metadata) ? `${doc.kind}/${doc.metadata.name}` : '?';
    for (const spec of podSpecs(doc)) {
      for (const key of ['initContainers', 'containers'] as const) {
        const list = spec[key];
        if (!Array.isArray(list)) continue;
        for (const container of list) {
          if (!isObject(container)) continue;
          const at = `${where} (${name}, container ${String(container.name)})`;
          const cli = containerCli(container);
          if (cli === 'other') continue;
          if (cli === 'unknown') {
            problems.push(
              `${at}: cannot tell which Shardline CLI this container runs (name it coordinator or worker, or give a command or image that says).`,
            );
            continue;
          }
          if (container.envFrom !== undefined) {
            problems.push(
              `${at}: envFrom hides which variables reach ${cli.cli}; list them under env so they can be checked.`,
            );
          }
          const env: Record<string, string | undefined> = {};
          for (const entry of Array.isArray(container.env) ? container.env : []) {
            if (isObject(entry) && typeof entry.name === 'string') {
              env[entry.name] = typeof entry.value === 'string' ? entry.value : undefined;
            }
          }
          const command = Array.isArray(container.command) ? container.command.slice(1) : [];
          const args = Array.isArray(container.args) ? container.args : [];
          invocations.push({
            where: at,
            cli: cli.cli,
            argv: [...cli.prefix, ...[...command, ...args].map(String)],
            env,
          });
        }
      }
    }
  }
  return { invocations, problems };
}

/**
 * Invocations of a JSON 6902 patch's additions to a container's `args` or `command`, given the
 * CLI of the patched container. Each added value is checked alone, so flags must be written
 * `--flag=value` there.
 */
export function jsonPatchInvocations(
  ops: unknown[],
  where: string,
  resolve: (containerIndex: number) => { cli: CliName; prefix: string[] } | undefined,
): Extracted {
  const invocations: Invocation[] = [];
  const problems: string[] = [];
  for (const op of ops) {
    if (!isObject(op) || typeof op.path !== 'string') {
      problems.push(`${where}: a JSON patch operation needs "op" and "path".`);
      continue;
    }
    const match = /\/containers\/(\d+)\/(args|command|env)(?:\/|$)/.exec(op.path);
    if (!match) continue;
    const cli = resolve(Number(match[1]));
    if (!cli) {
      problems.push(`${where}: ${op.path} patches a container that is not a Shardline CLI's.`);
      continue;
    }
    const values = Array.isArray(op.value) ? op.value : [op.value];
    if (match[2] === 'env') {
      const env: Record<string, string | undefined> = {};
      for (const entry of values) {
        if (isObject(entry) && typeof entry.name === 'string') {
          env[entry.name] = typeof entry.value === 'string' ? entry.value : undefined;
        }
      }
      invocations.push({ where: `${where} (${op.path})`, cli: cli.cli, argv: [], env });
    } else {
      invocations.push({
        where: `${where} (${op.path})`,
        cli: cli.cli,
        argv: [...cli.prefix, ...values.map(String)],
        env: {},
      });
    }
  }
  return { invocations, problems };
}

/** `KEY=value` lines, and commented-out ones (`#KEY=value`) that a user would uncomment. */
export function parseEnvFile(text: string): Array<{ line: number; name: string; value: string }> {
  const entries: Array<{ line: number; name: string; value: string }> = [];
  text.split('\n').forEach((raw, i) => {
    const match = /^\s*#?\s*([A-Z_][A-Z0-9_]*)=(.*)$/.exec(raw);
    if (!match) return;
    let value = match[2]!.trim();
    if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1);
    entries.push({ line: i + 1, name: match[1]!, value });
  });
  return entries;
}

/** Splits a systemd command line into words (whitespace, with "double" and 'single' quotes). */
function systemdWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (const m of line.matchAll(re)) words.push(m[1] ?? m[2] ?? m[3]!);
  return words;
}

/**
 * Invocations of a systemd unit's Exec lines that run a Shardline CLI, with the unit's
 * Environment= and its EnvironmentFile= (found with `envFile`, which maps an installed path such
 * as /etc/shardline/worker.env to the example in the repository, if there is one).
 */
export function systemdInvocations(
  text: string,
  where: string,
  envFile: (installedPath: string) => { text: string; where: string } | undefined,
): Extracted {
  const invocations: Invocation[] = [];
  const problems: string[] = [];
  const env: Record<string, string | undefined> = {};
  const execs: Array<{ line: number; words: string[] }> = [];
  // Continuation lines end with a backslash.
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith('#') || line.startsWith(';')) return;
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!match) return;
    const [, key, value] = match as unknown as [string, string, string];
    if (key === 'Environment') {
      for (const word of systemdWords(value)) {
        const eq = word.indexOf('=');
        if (eq > 0) env[word.slice(0, eq)] = word.slice(eq + 1);
      }
    } else if (key === 'EnvironmentFile') {
      const path = value.replace(/^-/, '');
      const file = envFile(path);
      if (file) for (const e of parseEnvFile(file.text)) env[e.name] = e.value;
    } else if (/^Exec/.test(key)) {
      // Prefixes: - (ignore failure), + ! !! (privileges), @ (argv[0]), : (no substitution).
      const words = systemdWords(value.replace(/^[-+!@:|]+/, ''));
      execs.push({ line: i + 1, words });
    }
  });
  for (const { line, words } of execs) {
    const cli = words[0] && cliOfExecutable(words[0]);
    if (!cli) continue;
    invocations.push({
      where: `${where}:${line}`,
      cli: cli.cli,
      argv: [...cli.prefix, ...words.slice(1)],
      env,
    });
  }
  return { invocations, problems };
}

/** Joins a Containerfile's continued lines; returns [line number, instruction, rest]. */
function instructions(text: string): Array<[number, string, string]> {
  const out: Array<[number, string, string]> = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*#/.test(line) || line.trim() === '') continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i++;
      const next = lines[i]!;
      if (/^\s*#/.test(next)) continue;
      line = `${line.slice(0, -1)} ${next}`;
    }
    const match = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (match) out.push([start + 1, match[1]!.toUpperCase(), match[2]!.trim()]);
  }
  return out;
}

/**
 * The invocation a Containerfile's final stage sets up: its ENTRYPOINT (exec form) and CMD, with
 * the variables of its ENV lines (from that stage and the stages it is built FROM).
 */
export function containerfileInvocations(text: string, where: string): Extracted {
  const problems: string[] = [];
  const stages = new Map<string, Record<string, string>>();
  let env: Record<string, string> = {};
  let entrypoint: string[] | undefined;
  let cmd: string[] = [];
  let entryLine = 0;
  for (const [line, instruction, rest] of instructions(text)) {
    if (instruction === 'FROM') {
      const [image, as, name] = rest.split(/\s+/);
      env = { ...(stages.get(image ?? '') ?? {}) };
      entrypoint = undefined;
      cmd = [];
      if (as?.toUpperCase() === 'AS' && name) stages.set(name, env);
    } else if (instruction === 'ENV') {
      for (const m of rest.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
        env[m[1]!] = m[2]!.replace(/^"|"$/g, '');
      }
    } else if (instruction === 'ENTRYPOINT' || instruction === 'CMD') {
      let words: string[];
      try {
        words = JSON.parse(rest) as string[];
      } catch {
        problems.push(
          `${where}:${line}: ${instruction} in shell form runs through /bin/sh, which swallows signals; use the exec form ["..."].`,
        );
        continue;
      }
      if (instruction === 'ENTRYPOINT') {
        entrypoint = words;
        entryLine = line;
        cmd = [];
      } else cmd = words;
    }
  }
  const cli = entrypoint?.[0] ? cliOfExecutable(entrypoint[0]) : undefined;
  if (!cli) {
    problems.push(`${where}: the final stage's ENTRYPOINT is not a Shardline CLI.`);
    return { invocations: [], problems };
  }
  return {
    invocations: [
      {
        where: `${where}:${entryLine}`,
        cli: cli.cli,
        argv: [...cli.prefix, ...entrypoint!.slice(1), ...cmd],
        env,
      },
    ],
    problems,
  };
}

/**
 * Splits shell text into simple commands, each a list of words. Understands quotes, `$(...)`,
 * backslash-newline, comments and the operators && || ; | &. Enough for documented commands,
 * not a shell.
 */
export function shellCommands(text: string): string[][] {
  const commands: string[][] = [];
  let words: string[] = [];
  let word = '';
  let inWord = false;
  const endWord = () => {
    if (inWord) words.push(word);
    word = '';
    inWord = false;
  };
  const endCommand = () => {
    endWord();
    if (words.length > 0) commands.push(words);
    words = [];
  };
  const s = text.replace(/\\\n/g, ' ');
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\n' || c === ';') endCommand();
    else if (c === '&' && (s[i - 1] === '>' || s[i + 1] === '>')) {
      // 2>&1, &>: a redirection, not a command separator.
      word += c;
      inWord = true;
    } else if (c === '&' || c === '|') {
      if (s[i + 1] === c) i++;
      endCommand();
    } else if (/\s/.test(c)) endWord();
    else if (c === '#' && !inWord) {
      while (i < s.length && s[i] !== '\n') i++;
      endCommand();
    } else if (c === "'") {
      const end = s.indexOf("'", i + 1);
      word += s.slice(i + 1, end < 0 ? s.length : end);
      inWord = true;
      i = end < 0 ? s.length : end;
    } else if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') {
        if (s[j] === '\\') j++;
        if (s[j] === '$' && s[j + 1] === '(') {
          // Keep "$(...)" whole, quotes inside it included.
          let depth = 0;
          for (; j < s.length; j++) {
            if (s[j] === '(') depth++;
            if (s[j] === ')' && --depth === 0) break;
          }
        }
        j++;
      }
      word += s.slice(i + 1, j);
      inWord = true;
      i = j;
    } else if (c === '$' && s[i + 1] === '(') {
      let depth = 0;
      let j = i;
      for (; j < s.length; j++) {
        if (s[j] === '(') depth++;
        if (s[j] === ')' && --depth === 0) break;
      }
      word += s.slice(i, j + 1);
      inWord = true;
      i = j;
    } else if (c === '\\') {
      word += s[i + 1] ?? '';
      inWord = true;
      i++;
    } else {
      word += c;
      inWord = true;
    }
  }
  endCommand();
  return commands;
}

/** Options of `podman run` / `docker run` that take a value, as far as documented commands use them. */
const RUN_VALUE_OPTIONS = new Set([
  '-v',
  '--volume',
  '-p',
  '--publish',
  '-e',
  '--env',
  '--name',
  '--device',
  '--gpus',
  '--network',
  '--user',
  '-u',
  '-w',
  '--workdir',
  '--env-file',
  '--restart',
  '--mount',
  '--hostname',
  '--entrypoint',
]);
const RUN_SWITCHES = new Set([
  '--rm',
  '-d',
  '--detach',
  '-i',
  '-t',
  '-it',
  '--init',
  '--read-only',
]);

/** Container images of deploy/containers, by the CLI their entrypoint runs. */
function cliOfImage(image: string): CliName | undefined {
  const repository = basename(image.replace(/[:@].*$/, ''));
  if (!/^shardline-/.test(repository) && !/shardline\//.test(image)) return undefined;
  if (/coordinator/.test(repository)) return 'shardline-coordinator';
  if (/worker/.test(repository)) return 'shardline-worker';
  return undefined;
}

/** The invocation one shell command makes, if it runs a Shardline CLI. */
function shellInvocation(
  words: string[],
  where: string,
): Invocation | { problem: string } | undefined {
  const env: Record<string, string | undefined> = {};
  let i = 0;
  for (; i < words.length; i++) {
    const w = words[i]!;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(w);
    if (m) env[m[1]!] = m[2]!;
    else if (w === 'sudo' || w === 'env' || w === 'exec') continue;
    else break;
  }
  const head = words[i];
  if (head === undefined) return undefined;
  // kubectl exec <pod> -- <command>: the command runs in the container, checked like any other.
  if (head === 'kubectl' && words.includes('exec') && words.includes('--')) {
    return shellInvocation(words.slice(words.indexOf('--') + 1), where);
  }
  // sh -c '<script>': the script's commands, checked like any other.
  const script = words[i + 2];
  if ((head === 'sh' || head === 'bash') && words[i + 1] === '-c' && script !== undefined) {
    const inner = shellCommands(script).map((w) => shellInvocation(w, where));
    const found = inner.find((x) => x !== undefined);
    if (found && !('problem' in found)) Object.assign(found.env, { ...env, ...found.env });
    return found;
  }
  // Redirections are the shell's, not the command's: drop them and their targets.
  const rest: string[] = [];
  const tail = words.slice(i + 1);
  for (let j = 0; j < tail.length; j++) {
    const w = tail[j]!;
    if (/^(\d*|&)(>>?|<)$/.test(w)) j++;
    else if (!/^(\d*|&)(>>?|<)/.test(w)) rest.push(w);
  }
  const direct = cliOfExecutable(head);
  if (direct) return { where, cli: direct.cli, argv: [...direct.prefix, ...rest], env };
  if (head === 'node' && rest[0]) {
    const m = /apps\/(coordinator|worker)\/dist\/cli\.js$/.exec(rest[0]);
    if (m) {
      const cli: CliName = m[1] === 'coordinator' ? 'shardline-coordinator' : 'shardline-worker';
      return { where, cli, argv: rest.slice(1), env };
    }
  }
  if ((head === 'podman' || head === 'docker') && rest[0] === 'run') {
    for (let j = 1; j < rest.length; j++) {
      const w = rest[j]!;
      if (!w.startsWith('-')) {
        const cli = cliOfImage(w);
        return cli ? { where, cli, argv: rest.slice(j + 1), env } : undefined;
      }
      const [flag, inline] = w.includes('=')
        ? [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]
        : [w, undefined];
      if (RUN_VALUE_OPTIONS.has(flag)) {
        const value = inline ?? rest[++j];
        if ((flag === '-e' || flag === '--env') && value) {
          const eq = value.indexOf('=');
          if (eq > 0) env[value.slice(0, eq)] = value.slice(eq + 1);
        }
      } else if (!RUN_SWITCHES.has(flag)) {
        return {
          problem: `${where}: ${head} run option ${flag} is unknown to this checker, so the command after it cannot be checked; add it to RUN_VALUE_OPTIONS or RUN_SWITCHES in tests/deploy/test/extract.ts.`,
        };
      }
    }
  }
  return undefined;
}

/** Invocations of the shell code blocks (sh, bash, shell, console) of a Markdown file. */
export function markdownInvocations(text: string, where: string): Extracted {
  const invocations: Invocation[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^\s*```(sh|bash|shell|console)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !/^\s*```\s*$/.test(lines[end]!)) end++;
    // In console blocks only the prompted lines are commands; the rest is their output.
    const block = lines
      .slice(start, end)
      .map((l) => (open[1] !== 'console' ? l : /^\s*\$ /.test(l) ? l.replace(/^\s*\$ /, '') : ''))
      .join('\n');
    // Here-documents that write an environment file (`tee /etc/shardline/worker.env <<'EOF'`):
    // their lines are settings of the CLI that file is for. Their text is not shell commands.
    const heredoc = /^(.*)<<-?\s*(['"]?)(\w+)\2[^\n]*\n([\s\S]*?)\n\3[ \t]*$/gm;
    const commandsText = block.replace(
      heredoc,
      (_, line: string, _q: string, _tag: string, body: string) => {
        const target = /(\S+\.env)\b/.exec(line)?.[1];
        if (target) {
          const cli: CliName = /coordinator/.test(basename(target))
            ? 'shardline-coordinator'
            : 'shardline-worker';
          const env: Record<string, string> = {};
          for (const e of parseEnvFile(body)) env[e.name] = e.value;
          invocations.push({
            where: `${where}:${start + 1}-${end} (${target})`,
            cli,
            argv: [],
            env,
          });
        }
        return line;
      },
    );
    for (const words of shellCommands(commandsText)) {
      const found = shellInvocation(words, `${where}:${start + 1}-${end}`);
      if (!found) continue;
      if ('problem' in found) problems.push(found.problem);
      else invocations.push(found);
    }
    i = end;
  }
  return { invocations, problems };
}
