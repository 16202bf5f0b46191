-- Why: every settle run publishes again the links disabled since its last
-- successful publish (settler/post.py publish_links), so that a tracker stops
-- serving a link even when the admin API's publish failed. Disabled links are
-- few; without this index each run would scan every link to find them.
CREATE INDEX idx_tracking_links_disabled ON tracking_links(disabled_at) WHERE disabled_at IS NOT NULL;
