// Finance and admin: settlement runs, reconcile, the KYC queue, off-Stripe funding, ledger
// adjustments, and withdrawals to pay.

import { ApiError, get, id, post, query } from '../api.js';
import { append, button, clear, dl, focusHeading, h, loadMore, rowAdder, section, table, toast } from '../dom.js';
import * as features from '../features.js';
import { form } from '../forms.js';
import { count, money, when } from '../format.js';
import { link, page } from '../router.js';
import { statusBadge } from './campaigns.js';

const TABS = [['/finance', 'Settlements'], ['/finance/reconcile', 'Reconcile'], ['/finance/kyc', 'KYC queue'],
  ['/finance/funding', 'Off-Stripe funding'], ['/finance/adjustments', 'Adjustments'], ['/finance/withdrawals', 'Withdrawals']];

function frame(path, title, ...children) {
  return h('div', {}, h('h1', {}, title),
    h('nav', { class: 'tabs', 'aria-label': 'Finance' }, h('ul', {}, TABS.map(([to, label]) =>
      h('li', {}, link(to, label, { 'aria-current': to === path ? 'page' : null }))))),
    ...children);
}

function reasons(byReason) {
  const entries = Object.entries(byReason || {});
  return entries.length ? h('ul', { class: 'plain' }, entries.map(([reason, n]) => h('li', {}, h('code', {}, reason), `: ${count(n)}`))) : 'none';
}

// What the run's refunds reversed and refused, and what they took back from supporters' rewards.
function refundsText(f) {
  const parts = [`${count(f.reversed)} reversed (${money(f.amount)}), ${count(f.rejected)} refused`];
  if (f.share_rewards?.count) parts.push(`${count(f.share_rewards.count)} share rewards lowered (${money(f.share_rewards.amount)})`);
  if (f.boost_rewards?.count) parts.push(`${count(f.boost_rewards.count)} boost rewards lowered (${money(f.boost_rewards.amount)})`);
  return parts.join('; ');
}

function reportView(r) {
  return dl([
    ['Events seen', count(r.events_seen)], ['Paid', h('span', { class: 'events-paid' }, count(r.events_paid))],
    ['Rejected', count(r.events_rejected)], ['Paid out', money(r.amount_paid)], ['Platform fees', money(r.fees)],
    ['Rejected by reason', reasons(r.rejected_by_reason)],
    ...(r.share_rewards ? [['Share rewards', `${count(r.share_rewards.events)} events through share links, ${count(r.share_rewards.rewards)} rewards (${money(r.share_rewards.amount)})`]] : []),
    ...(r.live_sales ? [['Live sales', `${count(r.live_sales.paid)} paid (${money(r.live_sales.amount)})`]] : []),
    ...(r.refunds ? [['Refunds', refundsText(r.refunds)]] : []),
    ...(r.checks ? [['Checks', r.ok ? `all ${count(r.checks.length)} hold`
      : r.checks.filter((c) => !c.ok).map((c) => c.name).join(', ')]] : []),
    ...(r.campaigns ? [['Campaigns', table([
      { label: 'Campaign', value: (c) => h('code', {}, c.id) }, { label: 'Paid', value: (c) => count(c.paid), class: 'num' },
      { label: 'Rejected', value: (c) => count(c.rejected), class: 'num' }, { label: 'Amount', value: (c) => money(c.amount_paid), class: 'num' },
      { label: 'Ended', value: (c) => (c.completed ? 'budget spent' : '') },
    ], Object.entries(r.campaigns).map(([key, c]) => ({ id: key, ...c })), { empty: 'none' })]] : []),
  ]);
}

const PAGE_SIZE = 20;  // settlement runs and campaigns per page; "Load more" fetches the next

const runsPage = (cursor) => get(`/v1/admin/settlements${query({ cursor, limit: PAGE_SIZE })}`);

page({
  path: '/finance', title: 'Settlements', roles: ['admin'], nav: { label: 'Finance' },
  render: async () => {
    const latest = h('div', { id: 'settlement-report', 'aria-live': 'polite' });
    const runs = h('div', { id: 'runs-list' }, await runsList());
    return frame('/finance', 'Settlements',
      section('Run now', h('p', {}, 'Settlement also runs on its schedule; this settles what arrived until now.'),
        h('div', { class: 'actions' },
          button('Run settlement now', async () => {
            const report = await post('/v1/admin/settlements');
            latest.replaceChildren(h('h3', {}, 'This run'), reportView(report));
            toast(`Settled: ${report.events_paid} paid, ${report.events_rejected} rejected`);
            append(clear(runs), await runsList());
          }, { kind: 'primary', id: 'run-settlement' }),
          button('Release due holds', async () => {
            const { released } = await post('/v1/admin/holds/release');
            toast(`${released} held entries released`);
            document.getElementById('holds-result').textContent = `Last release: ${count(released)} held entries became available.`;
          }, { id: 'release-holds' })),
        h('p', { id: 'holds-result', role: 'status' }),
        latest),
      section('Runs', runs));
  },
});

const RUN_COLUMNS = [
  { label: 'Started', value: (r) => when(r.started_at) }, { label: 'Kind', value: (r) => r.kind },
  { label: 'Status', value: (r) => r.status + (r.dry_run ? ' (dry run)' : '') },
  { label: 'Paid', value: (r) => count(r.events_paid), class: 'num' }, { label: 'Rejected', value: (r) => count(r.events_rejected), class: 'num' },
  { label: 'Amount', value: (r) => money(r.amount_paid), class: 'num' },
  { label: 'Report', value: (r) => h('details', {}, h('summary', {}, 'Details'),
    reportView({ ...(r.report || {}), ...r }), r.error ? h('p', { class: 'field-error' }, r.error) : null) },
];

// The runs, newest first, a page at a time.
async function runsList() {
  const first = await runsPage();
  const shown = table(RUN_COLUMNS, first.items, { id: 'runs', empty: 'No settlement has run yet.' });
  return [shown, loadMore(first.next_cursor, runsPage, rowAdder(shown, RUN_COLUMNS), { label: 'Load more runs', id: 'more-runs' })];
}

page({
  path: '/finance/reconcile', title: 'Reconcile', roles: ['admin'],
  render: async () => {
    // The scheduler's last reconcile at once (auditing the whole books takes seconds); "Check now" runs one.
    const { items: [last] } = await get(`/v1/admin/settlements${query({ kind: 'reconcile', limit: 1 })}`);
    const holder = h('div', { id: 'reconcile-result', 'aria-live': 'polite' },
      last ? reconcileView(last.report, `Checked by the scheduler ${when(last.finished_at)}.`)
        : reconcileView(await get('/v1/admin/reconcile'), 'Checked just now.'));
    return frame('/finance/reconcile', 'Reconcile',
      section('Books', holder, h('p', {}, button('Check now', async () => {
        holder.replaceChildren(reconcileView(await get('/v1/admin/reconcile'), 'Checked just now.'));
      }, { id: 'reconcile-now' }))));
  },
});

function reconcileView(result, checkedWhen) {
  const failing = result.checks.filter((c) => !c.ok);
  return h('div', {},
    h('p', { id: 'reconcile-status', class: result.ok ? 'ok' : 'bad' },
      result.ok ? 'All invariants hold.' : `${failing.length} check(s) failing.`),
    h('p', { class: 'muted', id: 'reconcile-when' }, checkedWhen),
    table([
      { label: 'Check', value: (c) => c.name }, { label: 'Result', value: (c) => h('span', { class: c.ok ? 'ok' : 'bad' }, c.ok ? 'ok' : 'FAILING') },
      { label: 'Detail', value: (c) => c.detail },
    ], [...failing, ...result.checks.filter((c) => c.ok)], { id: 'reconcile-checks' }));
}

// Everyone who can withdraw needs approved KYC (POST /v1/withdrawals refuses the others): creators (earnings)
// and supporters (boost and share rewards). One list per payee role, each paged; a user with both is in both.
const PAYEES = [['creator', 'Creators'], ['supporter', 'Supporters']];

page({
  path: '/finance/kyc', title: 'KYC queue', roles: ['admin'],
  render: async ({ query: q, refresh }) => {
    const status = q.get('kyc_status') || 'pending';
    const decide = (u, verdict) => async () => {
      await post(`/v1/admin/users/${id(u.id)}/kyc`, { status: verdict });
      toast(`${u.email}: KYC ${verdict}`);
      await refresh();
      focusHeading(`kyc-${u.role}`);  // the pressed button is gone with its row
    };
    const lists = await Promise.all(PAYEES.map(async ([role, label]) => {
      const columns = [
        { label: 'Email', value: (u) => u.email }, { label: 'Name', value: (u) => u.display_name || u.username || '' },
        { label: 'Payout account', value: (u) => u.stripe_account_id || 'none yet' }, { label: 'Signed up', value: (u) => when(u.created_at) },
        { label: 'KYC', value: (u) => u.kyc_status },
        { label: 'Decision', value: (u) => h('div', { class: 'actions' },
          u.kyc_status !== 'approved' ? button('Approve', decide({ ...u, role }, 'approved'), { kind: 'primary', 'aria-label': `Approve ${u.email}` }) : null,
          u.kyc_status !== 'rejected' ? button('Reject', decide({ ...u, role }, 'rejected'), { kind: 'danger', 'aria-label': `Reject ${u.email}` }) : null) },
      ];
      const fetchPage = (cursor) => get(`/v1/admin/users${query({ kyc_status: status, role, cursor, limit: PAGE_SIZE })}`);
      const first = await fetchPage();
      const shown = table(columns, first.items, { id: `kyc-${role}-list`, empty: 'Nobody is waiting.' });
      return h('section', { class: 'card' }, h('h2', { id: `kyc-${role}` }, `${label}: ${status}`), shown,
        loadMore(first.next_cursor, fetchPage, rowAdder(shown, columns), { label: `Load more ${label.toLowerCase()}`, id: `more-kyc-${role}` }));
    }));
    return frame('/finance/kyc', 'KYC queue',
      h('p', {}, 'Creators and supporters withdraw only once their identity is approved. Show: ',
        ['pending', 'approved', 'rejected'].map((s) => [link(`/finance/kyc?kyc_status=${s}`, s, { 'aria-current': s === status ? 'true' : null }), ' '])),
      ...lists);
  },
});

page({
  path: '/finance/funding', title: 'Off-Stripe funding', roles: ['admin'],
  render: async ({ query: q, refresh }) => {
    const status = q.get('status') || 'draft';
    const campaignsPage = (cursor) => get(`/v1/campaigns${query({ status, cursor, limit: PAGE_SIZE })}`);
    const campaigns = await campaignsPage();
    const fund = form({
      id: 'admin-funding', submit: 'Record funds', resetOnSuccess: true,
      fields: [
        { name: 'campaign_id', label: 'Campaign id', required: true, value: q.get('campaign') || '' },
        { name: 'amount', label: 'Amount received (USD)', required: true, inputmode: 'decimal' },
        { name: 'reference', label: 'Reference (wire or cheque number)', required: true },
      ],
      onSubmit: async ({ campaign_id: campaignId, ...body }) => {
        if (!campaignId) throw new ApiError(422, { code: 'invalid', message: 'campaign id is required', field: 'campaign_id' });
        const funding = await post(`/v1/admin/campaigns/${id(campaignId)}/funding`, body,
          { headers: { 'Idempotency-Key': crypto.randomUUID() } });
        toast(`Recorded ${money(funding.amount)} for the campaign`);
        refresh();
      },
    });
    const fundable = table(FUNDABLE_COLUMNS, campaigns.items, { id: 'fundable', empty: `No ${status} campaign.` });
    return frame('/finance/funding', 'Off-Stripe funding',
      section('Record money received', h('p', {}, 'For a wire or a cheque: escrow and the campaign budget rise at once.'), fund.el),
      section('Campaigns', h('p', {}, 'Show: ', ['draft', 'active', 'paused'].map((s) => [link(`/finance/funding?status=${s}`, s, { 'aria-current': s === status ? 'true' : null }), ' '])),
        fundable, loadMore(campaigns.next_cursor, campaignsPage, rowAdder(fundable, FUNDABLE_COLUMNS),
          { label: 'Load more campaigns', id: 'more-fundable' })));
  },
});

const FUNDABLE_COLUMNS = [
  { label: 'Campaign', value: (c) => c.title }, { label: 'Status', value: (c) => statusBadge(c.status) },
  { label: 'Funded', value: (c) => money(c.funded_budget), class: 'num' }, { label: 'Remaining', value: (c) => money(c.remaining_budget), class: 'num' },
  { label: 'Id', value: (c) => h('code', {}, c.id) },
  { label: 'Action', value: (c) => button('Fund', () => {
    document.getElementById('admin-funding-campaign_id').value = c.id;
    document.getElementById('admin-funding-amount').focus();
  }, { 'aria-label': `Fund ${c.title}` }) },
];

function legRow(i) {
  const field = (name, control) => h('div', { class: 'field' }, h('label', { for: `leg-${i}-${name}` }, name.replace('_', ' ')), control,
    h('p', { class: 'field-error', id: `leg-${i}-${name}-error`, role: 'alert' }));
  const described = (name) => ({ id: `leg-${i}-${name}`, 'aria-describedby': `leg-${i}-${name}-error` });
  return h('fieldset', { class: 'leg', 'data-leg': i }, h('legend', {}, `Leg ${i + 1}`),
    field('account', h('select', described('account'), [['user_id', 'a user\'s wallet (user id)'], ['platform', 'platform wallet'], ['wallet_id', 'a wallet id']]
      .map(([v, l]) => h('option', { value: v }, l)))),
    field('target', h('input', { ...described('target'), placeholder: 'user id, wallet id, or fees / clearing' })),
    field('direction', h('select', described('direction'), h('option', { value: 'credit' }, 'credit'), h('option', { value: 'debit' }, 'debit'))),
    field('amount', h('input', { ...described('amount'), inputmode: 'decimal' })));
}

// The leg input an API error names: "legs[1].amount" is leg 1's amount; the wallet keys (user_id, platform,
// wallet_id) and a bare "legs[1]" are its target. Null when the error names no single leg.
function legInput(apiField) {
  const found = /^legs\[(\d+)\](?:\.(\w+))?$/.exec(apiField || '');
  if (!found) return null;
  const name = found[2] === 'amount' || found[2] === 'direction' ? found[2] : 'target';
  return document.getElementById(`leg-${found[1]}-${name}`);
}

function clearLegErrors(legs) {
  for (const input of legs.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  for (const message of legs.querySelectorAll('.field-error')) message.textContent = '';
}

page({
  path: '/finance/adjustments', title: 'Adjustments', roles: ['admin'],
  render: async () => {
    const legs = h('div', { id: 'legs' }, legRow(0), legRow(1));
    const legsError = h('p', { class: 'field-error', id: 'adjustment-legs-error', role: 'alert' });
    const result = h('div', { id: 'adjustment-result', 'aria-live': 'polite' });
    const adjust = form({
      id: 'adjustment', submit: 'Post adjustment',
      fields: [{ name: 'reason', label: 'Reason', required: true, help: 'Kept on every ledger entry of the adjustment.' }],
      extra: h('div', {}, legs, legsError, button('Add a leg', () => legs.append(legRow(legs.children.length)))),
      onSubmit: async (values) => {
        legsError.textContent = '';
        clearLegErrors(legs);
        const body = { ...values, legs: [...legs.children].map((_, i) => {
          const account = document.getElementById(`leg-${i}-account`).value;
          return { [account]: document.getElementById(`leg-${i}-target`).value.trim(),
            direction: document.getElementById(`leg-${i}-direction`).value, amount: document.getElementById(`leg-${i}-amount`).value.trim() };
        }) };
        try {
          const done = await post('/v1/admin/adjustments', body);
          result.replaceChildren(h('p', {}, `Posted transfer ${done.transfer_id} (${done.entries.length} entries).`));
          toast('Adjustment posted');
        } catch (err) {
          if (!err.field || !err.field.startsWith('legs')) throw err;
          const input = legInput(err.field);
          if (!input) {  // about the legs together (unbalanced, a balance would go negative)
            legsError.textContent = err.message;
            return;
          }
          input.setAttribute('aria-invalid', 'true');
          document.getElementById(`${input.id}-error`).textContent = err.message;
          input.focus();
        }
      },
    });
    return frame('/finance/adjustments', 'Adjustments',
      section('New adjustment', h('p', {}, 'A balanced, settled transfer: credits must equal debits. Escrow cannot be adjusted.'), adjust.el, result));
  },
});

// The payout job, once, now (POST /v1/admin/payouts); it also runs on its schedule.
function payNow(refresh) {
  const outcome = h('p', { id: 'payout-result', role: 'status' });
  return h('div', {}, h('div', { class: 'actions' }, button('Pay due withdrawals now', async () => {
    const run = await post('/v1/admin/payouts');
    const text = `Paid ${count(run.paid)} (${money(run.amount_paid)}), failed ${count(run.failed)}, deferred ${count(run.deferred)}`;
    toast(text);
    await refresh();
    document.getElementById('payout-result').textContent = `Last run: ${text}.`;
  }, { kind: 'primary', id: 'pay-now' })), outcome);
}

page({
  path: '/finance/withdrawals', title: 'Withdrawals', roles: ['admin'],
  render: async ({ query: q, refresh }) => {
    const status = q.get('status') || 'requested';
    const [list, canPay] = await Promise.all([get(`/v1/admin/withdrawals${query({ status, cursor: q.get('cursor') })}`),
      features.has('post', '/v1/admin/payouts')]);
    return frame('/finance/withdrawals', 'Withdrawals',
      h('p', {}, 'Show: ', ['requested', 'processing', 'completed', 'failed'].map((s) => [link(`/finance/withdrawals?status=${s}`, s, { 'aria-current': s === status ? 'true' : null }), ' '])),
      section(status === 'requested' ? 'To pay' : `Withdrawals: ${status}`,
        h('p', { class: 'muted' }, 'The payout job pays requested withdrawals through Stripe on its schedule; each is paid at most once.'),
        canPay ? payNow(refresh) : null,
        table([
          { label: 'Requested', value: (w) => when(w.created_at) }, { label: 'Creator', value: (w) => w.email },
          { label: 'Amount', value: (w) => money(w.amount), class: 'num' }, { label: 'Method', value: (w) => w.method },
          { label: 'Status', value: (w) => w.status }, { label: 'Stripe transfer', value: (w) => w.stripe_transfer_id || '—' },
          { label: 'Failure', value: (w) => w.failure_reason || '' },
        ], list.items, { empty: 'Nothing here.' }),
        list.next_cursor ? link(`/finance/withdrawals${query({ status, cursor: list.next_cursor })}`, 'More →') : null));
  },
});
