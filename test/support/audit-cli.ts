import { Command } from 'commander';
import { registerAuditCommands } from '../../runtime/cli/audit-command.js';

class Failure extends Error {}

export interface AuditCliResult {
  code: number | undefined;
  out: string[];
  error?: string;
}

/** Runs `palisade audit ...` in process, on a fresh commander program, as `palisade` registers it. */
export async function runAuditCli(args: string[], options: { signal?: AbortSignal; onLine?: (line: string) => void } = {}): Promise<AuditCliResult> {
  const out: string[] = [];
  let code: number | undefined;
  const program = new Command('palisade').exitOverride().configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
  registerAuditCommands(
    program,
    {
      out: (line) => {
        out.push(line);
        options.onLine?.(line);
      },
      fail: (message) => {
        throw new Failure(message);
      },
      ...(options.signal ? { signal: options.signal } : {}),
    },
    (c) => (code = c),
  );
  try {
    await program.parseAsync(['node', 'palisade', 'audit', ...args]);
  } catch (error) {
    if (error instanceof Failure) return { code: 2, out, error: error.message };
    const exitCode = (error as { exitCode?: number }).exitCode;
    if (exitCode !== undefined) return { code: exitCode === 0 ? 0 : 2, out, error: String(error) };
    throw error;
  }
  return { code, out };
}
