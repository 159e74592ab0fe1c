// Requests to the service's routes, and what to tell the user when one fails.
// URLs are relative to the page (/demo/), so the page works wherever the service is mounted.

/** A request the service refused, or one that never reached it (`status` 0). */
export class RequestFailed extends Error {
  constructor(status, message) {
    super(message);
    this.name = "RequestFailed";
    this.status = status;
  }
}

/** What a failed request means for the user, from its status and the service's `error` text. */
function describe(status, error) {
  switch (status) {
    case 400:
      return `The service refused the file (400): ${error}`;
    case 413:
      return `Too large for the service (413): ${error}`;
    case 415:
      return `Not an image the service can read (415): ${error}`;
    case 429:
      return `The service is busy (429): try again in a moment. ${error}`;
    case 503:
      return `The service or its model is not ready (503): ${error}`;
    default:
      return `The service answered ${status}: ${error}`;
  }
}

/** The JSON body of a response, or null when it has none (a proxy's HTML error page, say). */
async function jsonBody(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * POST one image file as multipart/form-data in `field` to `path` (with its query); the JSON answer.
 * Throws `RequestFailed` with a message for the user, or the AbortError of `signal`.
 */
export async function postImage(path, field, file, signal) {
  const form = new FormData();
  form.append(field, file, file.name);
  let response;
  try {
    response = await fetch(`../${path}`, { method: "POST", body: form, signal });
  } catch (error) {
    if (signal.aborted) throw error;
    throw new RequestFailed(
      0,
      "Could not reach the service (network failure): check your connection and that the service is running.",
    );
  }
  const body = await jsonBody(response);
  if (response.ok && body !== null) return body;
  const error = body?.error ?? (response.statusText || "no explanation given");
  throw new RequestFailed(response.status, describe(response.status, error));
}

/** The top-k labels of one image file: the first (and only) answer of `POST /classify/{model}`. */
export async function classify(model, file, signal) {
  const [answer] = await postImage(`classify/${model}`, "images", file, signal);
  return answer;
}

/** The Grad-CAM of the top class: `POST /explain/{model}`. */
export const explain = (model, file, signal) => postImage(`explain/${model}`, "image", file, signal);

/** The feature maps of a convolution layer (the first one when `layer` is empty): `POST /features/{model}`. */
export function features(model, file, layer, signal) {
  const query = layer ? `?${new URLSearchParams({ layer })}` : "";
  return postImage(`features/${model}${query}`, "image", file, signal);
}
