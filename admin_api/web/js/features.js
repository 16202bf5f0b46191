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

// The enum of a JSON body field (of its items, for an array), or null when the operation does not take it.
export async function bodyOptions(method, path, name) {
  const doc = await load();
  const resolve = (schema) => (schema && schema.$ref
    ? doc.components?.schemas?.[schema.$ref.split('/').pop()] : schema);
  const op = doc.paths?.[path]?.[method.toLowerCase()];
  const body = resolve(op?.requestBody?.content?.['application/json']?.schema);
  let field = resolve(body?.properties?.[name]);
  if (field?.anyOf) field = resolve(field.anyOf.find((one) => one.type !== 'null'));
  if (field?.type === 'array') field = resolve(field.items);
  return field?.enum ?? null;
}
