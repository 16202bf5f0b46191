-- Why: the seed's Phase 2 tables (supporters), as specified, with the checks the
-- seed left out (positive amounts, tip fee arithmetic, one unlock per tip and post).
CREATE TABLE memberships (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID REFERENCES users(id) ON DELETE CASCADE,
  membership_type VARCHAR(30) NOT NULL
    CHECK (membership_type IN ('creator_plus', 'creator_pro', 'supporter_plus', 'business_growth')),
  status VARCHAR(20) DEFAULT 'active' CHECK (status IN ('active', 'canceled', 'expired')),
  billing_provider_id VARCHAR(100),
  started_at TIMESTAMPTZ DEFAULT NOW(),
  ends_at TIMESTAMPTZ
);

CREATE TABLE communities (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  creator_id UUID REFERENCES users(id) ON DELETE CASCADE,
  name VARCHAR(100) NOT NULL,
  description TEXT,
  created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE community_members (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  community_id UUID REFERENCES communities(id) ON DELETE CASCADE,
  user_id UUID REFERENCES users(id) ON DELETE CASCADE,
  role VARCHAR(20) DEFAULT 'member' CHECK (role IN ('member', 'supporter')),
  joined_at TIMESTAMPTZ DEFAULT NOW(),
  UNIQUE(community_id, user_id)
);

CREATE TABLE community_posts (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  community_id UUID REFERENCES communities(id) ON DELETE CASCADE,
  creator_id UUID REFERENCES users(id) ON DELETE CASCADE,
  content_type VARCHAR(20) CHECK (content_type IN ('text', 'image', 'video', 'link')),
  content_url TEXT,
  is_locked BOOLEAN DEFAULT FALSE,
  min_tip_to_unlock DECIMAL(10,2) CHECK (min_tip_to_unlock IS NULL OR min_tip_to_unlock > 0),
  created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE tips (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  from_user_id UUID REFERENCES users(id) ON DELETE CASCADE,
  to_creator_id UUID REFERENCES users(id) ON DELETE CASCADE,
  amount DECIMAL(10,2) NOT NULL CHECK (amount > 0),
  platform_fee DECIMAL(10,2) NOT NULL CHECK (platform_fee >= 0),
  net_amount DECIMAL(10,2) NOT NULL CHECK (net_amount >= 0),
  frequency VARCHAR(20) DEFAULT 'one_time' CHECK (frequency IN ('one_time', 'monthly')),
  created_at TIMESTAMPTZ DEFAULT NOW(),
  CONSTRAINT tip_fee_adds_up CHECK (platform_fee + net_amount = amount)
);

CREATE TABLE tip_unlocks (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tip_id UUID REFERENCES tips(id) ON DELETE CASCADE,
  community_post_id UUID REFERENCES community_posts(id) ON DELETE CASCADE,
  unlocked_at TIMESTAMPTZ DEFAULT NOW(),
  UNIQUE (tip_id, community_post_id)
);

CREATE TABLE boosts (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  supporter_id UUID REFERENCES users(id) ON DELETE CASCADE,
  campaign_id UUID REFERENCES campaigns(id) ON DELETE CASCADE,
  amount DECIMAL(10,2) NOT NULL CHECK (amount > 0),
  created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE rewards (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID REFERENCES users(id) ON DELETE CASCADE,
  source VARCHAR(30) CHECK (source IN ('boost', 'share', 'prediction')),
  amount DECIMAL(10,2) NOT NULL CHECK (amount > 0),
  status VARCHAR(20) DEFAULT 'pending' CHECK (status IN ('pending', 'paid')),
  created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX idx_memberships_user ON memberships(user_id);
CREATE INDEX idx_communities_creator ON communities(creator_id);
CREATE INDEX idx_community_members_user ON community_members(user_id);
CREATE INDEX idx_community_posts_community ON community_posts(community_id);
CREATE INDEX idx_tips_from ON tips(from_user_id);
CREATE INDEX idx_tips_to ON tips(to_creator_id);
CREATE INDEX idx_boosts_campaign ON boosts(campaign_id);
CREATE INDEX idx_rewards_user ON rewards(user_id);
