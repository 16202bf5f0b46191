// Every area of the app is one module that registers its pages (the menu follows this order).
// Phase 2 (supporters: communities, posts, tips, memberships) adds `import './supporter.js';`, whose
// pages name their API operation, e.g. `feature: ['get', '/v1/communities']`: the menu shows them
// only on a server whose /openapi.json lists it (router.js), so the app and the API can ship apart.
import './auth.js';
import './campaigns.js';
import './stats.js';
import './creator.js';
import './wallet.js';
import './finance.js';
import './account.js';
