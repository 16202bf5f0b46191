-- Why: the seed names live_events and live_sales for Phase 3 but never defines
-- them. A live event is a creator's shopping session (optionally for a
-- business's campaign); a live sale is an order placed during it, paid out
-- through the ledger like any other commission (source_type 'live_sale').
CREATE TABLE live_events (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  creator_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  campaign_id UUID REFERENCES campaigns(id) ON DELETE SET NULL,
  title VARCHAR(200) NOT NULL,
  description TEXT,
  stream_url TEXT,
  status VARCHAR(20) NOT NULL DEFAULT 'scheduled'
    CHECK (status IN ('scheduled', 'live', 'ended', 'canceled')),
  scheduled_at TIMESTAMPTZ,
  started_at TIMESTAMPTZ,
  ended_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  CONSTRAINT live_event_times CHECK (ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at)
);

CREATE TABLE live_sales (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  live_event_id UUID NOT NULL REFERENCES live_events(id) ON DELETE RESTRICT,
  buyer_id UUID REFERENCES users(id) ON DELETE SET NULL,
  product_sku VARCHAR(100),
  order_id VARCHAR(200) NOT NULL,
  quantity INTEGER NOT NULL DEFAULT 1 CHECK (quantity > 0),
  amount DECIMAL(12,2) NOT NULL CHECK (amount > 0),
  currency VARCHAR(3) NOT NULL DEFAULT 'USD',
  commission DECIMAL(12,2) NOT NULL DEFAULT 0 CHECK (commission >= 0),
  platform_fee DECIMAL(12,2) NOT NULL DEFAULT 0 CHECK (platform_fee >= 0),
  status VARCHAR(20) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'refunded')),
  transfer_id UUID,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  UNIQUE (live_event_id, order_id)
);

CREATE INDEX idx_live_events_creator ON live_events(creator_id);
CREATE INDEX idx_live_events_status ON live_events(status);
CREATE INDEX idx_live_sales_event ON live_sales(live_event_id);
