// Every area of the app is one module that registers its pages (the menu follows this order).
// Phase 2 (supporters: communities, posts, tips, memberships) adds `import './supporter.js';`.
import './auth.js';
import './campaigns.js';
import './stats.js';
import './creator.js';
import './wallet.js';
import './finance.js';
import './account.js';
