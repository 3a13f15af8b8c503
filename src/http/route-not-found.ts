import { NotFoundError, OutrunError } from '../errors.ts';

/** The longest path segment (a path parameter) the API takes; a longer one is `414 uri_too_long`. */
export const MAX_PATH_SEGMENT_LENGTH = 100;

/**
 * Why no route answers `url`: a path segment over `MAX_PATH_SEGMENT_LENGTH` (the router matches no route for a
 * parameter that long, rather than saying so) is `414 uri_too_long`; anything else `404 route_not_found`.
 */
export function routeNotFound(url: string): OutrunError {
  const path = url.split('?', 1)[0]!;
  if (path.split('/').some((segment) => segment.length > MAX_PATH_SEGMENT_LENGTH)) {
    return new OutrunError({ code: 'uri_too_long', status: 414, message: 'A path segment is too long.' });
  }
  return new NotFoundError('route');
}
