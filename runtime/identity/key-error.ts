/** A key file that cannot be read or used, or a key this process does not hold. */
export class KeyError extends Error {
  override readonly name = 'KeyError';
}
