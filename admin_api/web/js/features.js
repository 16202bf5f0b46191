// Optional API features, read from the API's own OpenAPI document: a page shows a CSV export,
// a QR code or a breakdown only when the server says it serves that endpoint or parameter.

let documentPromise = null;

function load() {
  documentPromise ??= fetch('/openapi.json', { credentials: 'same-origin' }).then((r) => r.json()).catch(() => ({ paths: {} }));
  return documentPromise;
}

export async function has(method, path) {
  const doc = await load();
  return Boolean(doc.paths && doc.paths[path] && doc.paths[path][method.toLowerCase()]);
}

// The enum of a query parameter (e.g. group_by of the stats), or null when the API does not take it.
export async function parameterOptions(method, path, name) {
  const doc = await load();
  const op = doc.paths && doc.paths[path] && doc.paths[path][method.toLowerCase()];
  const param = op && (op.parameters || []).find((p) => p.name === name && p.in === 'query');
  if (!param) return null;
  return (param.schema && param.schema.enum) || [];
}
