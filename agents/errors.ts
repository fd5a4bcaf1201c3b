import { z } from 'zod';

/** An agent or tool definition that cannot work; thrown at startup, never at run time. */
export class InvalidDefinitionError extends Error {
  override readonly name = 'InvalidDefinitionError';
  constructor(
    readonly subject: string,
    readonly problems: string[],
  ) {
    super(`Invalid ${subject}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Turns zod issues into `path: message` lines a person can act on. */
export function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
    return `${path}: ${issue.message}`;
  });
}
