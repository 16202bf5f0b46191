// Every area of the app is one module that registers its pages (the menu follows this order).
// A page whose API is optional names its operation (`feature: ['get', '/v1/communities']`): the menu
// shows it only on a server whose /openapi.json lists it (router.js), so the app and the API ship apart.
import './auth.js';
import './campaigns.js';
import './stats.js';
import './creator.js';
import './wallet.js';
// Live shopping (docs/live.md): creators' live events, their businesses' commission and sales.
import './live.js';
// Supporters (issue 14): communities and posts, tips, memberships, boosts and their rewards, share links.
import './communities.js';
import './tips.js';
import './memberships.js';
import './boosts.js';
import './shares.js';
import './finance.js';
import './account.js';
import './webhooks.js';
