-- Why: campaigns, creators, links and the paid-event record, with the seed's
-- defects fixed:
--  * events held no settlement link and no rejection reason. The settler now
--    records every event it decides, keyed by the edge event id (so a replay
--    can never pay twice), with its status, reason, run and ledger transfer.
--  * tracking_links counters were meant to be bumped per click (a hot row).
--    They are now maintained by the settler, once per link per run.
-- Budget: remaining_budget is the campaign's money still held in escrow, so it
-- starts at zero and funding raises it; funded_budget records what arrived.
-- Invariants: escrow = sum(remaining_budget) and funded - remaining = paid.
CREATE TABLE campaigns (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id UUID REFERENCES users(id) ON DELETE CASCADE,
  title VARCHAR(200) NOT NULL,
  description TEXT,
  hashtags TEXT[] DEFAULT '{}',
  objective VARCHAR(20) NOT NULL CHECK (objective IN ('click', 'conversion', 'sale')),
  payout_per_action DECIMAL(10,2) NOT NULL CHECK (payout_per_action > 0),
  destination_url TEXT,
  total_budget DECIMAL(12,2) NOT NULL,
  remaining_budget DECIMAL(12,2) NOT NULL DEFAULT 0,
  funded_budget DECIMAL(12,2) NOT NULL DEFAULT 0 CHECK (funded_budget >= 0),
  status VARCHAR(20) DEFAULT 'draft'
    CHECK (status IN ('draft', 'active', 'paused', 'completed')),
  start_date TIMESTAMPTZ,
  end_date TIMESTAMPTZ,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),
  CONSTRAINT positive_budget CHECK (total_budget > 0),
  CONSTRAINT valid_remaining CHECK (remaining_budget >= 0),
  CONSTRAINT remaining_lte_total CHECK (remaining_budget <= total_budget),
  CONSTRAINT remaining_lte_funded CHECK (remaining_budget <= funded_budget),
  CONSTRAINT valid_dates CHECK (end_date IS NULL OR start_date IS NULL OR end_date > start_date)
);

-- Every status a campaign has held, and since when: the settler bills an event
-- only if its campaign was active at the moment the event happened.
CREATE TABLE campaign_status_history (
  id BIGSERIAL PRIMARY KEY,
  campaign_id UUID NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
  status VARCHAR(20) NOT NULL,
  changed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE campaign_creators (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  campaign_id UUID REFERENCES campaigns(id) ON DELETE CASCADE,
  creator_id UUID REFERENCES users(id) ON DELETE CASCADE,
  status VARCHAR(20) DEFAULT 'pending'
    CHECK (status IN ('pending', 'accepted', 'rejected', 'completed')),
  total_earned DECIMAL(12,2) DEFAULT 0.00,
  accepted_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  UNIQUE(campaign_id, creator_id)
);

-- Money received for a campaign: an admin's off-Stripe record or a Stripe
-- PaymentIntent (credited once, when its webhook says it succeeded).
CREATE TABLE campaign_fundings (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  campaign_id UUID NOT NULL REFERENCES campaigns(id) ON DELETE RESTRICT,
  amount DECIMAL(12,2) NOT NULL CHECK (amount > 0),
  method VARCHAR(20) NOT NULL CHECK (method IN ('manual', 'stripe')),
  reference VARCHAR(200),
  stripe_payment_intent_id VARCHAR(100) UNIQUE,
  status VARCHAR(20) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
  transfer_id UUID,
  created_by UUID REFERENCES users(id),
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  succeeded_at TIMESTAMPTZ
);

CREATE TABLE tracking_links (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  campaign_id UUID REFERENCES campaigns(id) ON DELETE CASCADE,
  creator_id UUID REFERENCES users(id) ON DELETE CASCADE,
  supporter_id UUID REFERENCES users(id),
  code VARCHAR(20) UNIQUE NOT NULL CHECK (code ~ '^[A-Za-z0-9_-]{4,20}$'),
  url TEXT NOT NULL,
  destination_url TEXT NOT NULL CHECK (destination_url ~ '^https?://' AND length(destination_url) <= 2048),
  click_count INTEGER DEFAULT 0,
  conversion_count INTEGER DEFAULT 0,
  created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE settlement_runs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  kind VARCHAR(20) NOT NULL DEFAULT 'settle' CHECK (kind IN ('settle', 'release_holds', 'reconcile')),
  status VARCHAR(20) NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
  dry_run BOOLEAN NOT NULL DEFAULT FALSE,
  watermark_from TIMESTAMPTZ,
  watermark_to TIMESTAMPTZ,
  events_seen BIGINT NOT NULL DEFAULT 0,
  events_paid BIGINT NOT NULL DEFAULT 0,
  events_rejected BIGINT NOT NULL DEFAULT 0,
  amount_paid DECIMAL(14,2) NOT NULL DEFAULT 0,
  fees DECIMAL(14,2) NOT NULL DEFAULT 0,
  rejected_by_reason JSONB NOT NULL DEFAULT '{}',
  report JSONB NOT NULL DEFAULT '{}',
  error TEXT,
  started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  finished_at TIMESTAMPTZ
);

-- Where each settler job got to, so a restart resumes rather than rescans.
CREATE TABLE settler_state (
  name VARCHAR(50) PRIMARY KEY,
  watermark TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE events (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  campaign_id UUID REFERENCES campaigns(id) ON DELETE CASCADE,
  creator_id UUID REFERENCES users(id) ON DELETE CASCADE,
  tracking_link_id UUID REFERENCES tracking_links(id),
  supporter_id UUID REFERENCES users(id),
  event_type VARCHAR(20) NOT NULL CHECK (event_type IN ('click', 'conversion', 'sale', 'refund')),
  value DECIMAL(12,2),
  currency VARCHAR(3),
  click_id UUID,
  order_id VARCHAR(200),
  occurred_at TIMESTAMPTZ,
  status VARCHAR(20) NOT NULL DEFAULT 'rejected' CHECK (status IN ('paid', 'rejected', 'reversed')),
  rejection_reason VARCHAR(40),
  settlement_run_id UUID REFERENCES settlement_runs(id),
  transfer_id UUID,
  verified BOOLEAN DEFAULT FALSE,
  verified_at TIMESTAMPTZ,
  payout_amount DECIMAL(12,2),
  platform_fee DECIMAL(12,2),
  paid BOOLEAN DEFAULT FALSE,
  paid_at TIMESTAMPTZ,
  ip_address INET,
  user_agent TEXT,
  metadata JSONB DEFAULT '{}',
  created_at TIMESTAMPTZ DEFAULT NOW(),
  CONSTRAINT paid_has_amounts CHECK (NOT paid OR (payout_amount IS NOT NULL AND platform_fee IS NOT NULL)),
  CONSTRAINT rejected_has_reason CHECK (status <> 'rejected' OR rejection_reason IS NOT NULL)
);

-- Processed Stripe webhook events: each is applied once.
CREATE TABLE stripe_events (
  id VARCHAR(100) PRIMARY KEY,
  type VARCHAR(100) NOT NULL,
  received_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_campaigns_business ON campaigns(business_id);
CREATE INDEX idx_campaigns_status ON campaigns(status);
CREATE INDEX idx_campaigns_hashtags ON campaigns USING GIN(hashtags);
CREATE INDEX idx_campaign_status_history ON campaign_status_history(campaign_id, changed_at);
CREATE INDEX idx_campaign_creators_campaign ON campaign_creators(campaign_id);
CREATE INDEX idx_campaign_creators_creator ON campaign_creators(creator_id);
CREATE INDEX idx_campaign_fundings_campaign ON campaign_fundings(campaign_id);
CREATE INDEX idx_tracking_campaign ON tracking_links(campaign_id);
CREATE INDEX idx_tracking_creator ON tracking_links(creator_id);
CREATE INDEX idx_tracking_code ON tracking_links(code);
CREATE INDEX idx_events_campaign ON events(campaign_id);
CREATE INDEX idx_events_creator ON events(creator_id);
CREATE INDEX idx_events_type ON events(event_type);
CREATE INDEX idx_events_verified ON events(verified);
CREATE INDEX idx_events_created ON events(created_at DESC);
CREATE INDEX idx_events_run ON events(settlement_run_id);
-- An order pays at most once per campaign, whatever the settler believes.
CREATE UNIQUE INDEX idx_events_paid_order ON events(campaign_id, order_id)
  WHERE order_id IS NOT NULL AND event_type IN ('conversion', 'sale') AND status IN ('paid', 'reversed');
CREATE INDEX idx_settlement_runs_started ON settlement_runs(started_at DESC);

CREATE TRIGGER update_campaigns_updated_at BEFORE UPDATE ON campaigns
  FOR EACH ROW EXECUTE FUNCTION update_updated_at();

CREATE OR REPLACE FUNCTION campaign_record_status() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
    INSERT INTO campaign_status_history (campaign_id, status) VALUES (NEW.id, NEW.status);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER campaigns_record_status AFTER INSERT OR UPDATE OF status ON campaigns
  FOR EACH ROW EXECUTE FUNCTION campaign_record_status();
