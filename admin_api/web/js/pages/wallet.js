// Creator and supporter money (tips and earnings; boost rewards): the wallet (pending, available), the ledger (with hold dates), withdrawals.

import { get, post, put, query } from '../api.js';
import { dl, h, loadMore, rowAdder, section, table, toast } from '../dom.js';
import { form } from '../forms.js';
import { money, when } from '../format.js';
import { link, page } from '../router.js';
import * as session from '../session.js';

const METHODS = [['ach', 'Bank transfer (ACH)'], ['instant', 'Instant payout'], ['card', 'To a debit card']];

function ledgerTable(items) {
  return table([
    { label: 'When', value: (e) => when(e.created_at) },
    { label: 'What', value: (e) => e.description || e.source_type },
    { label: 'Amount', value: (e) => `${e.direction === 'debit' ? '−' : '+'}${money(e.amount)}`, class: 'num' },
    { label: 'Status', value: (e) => e.status },
    { label: 'Held until', value: (e) => (e.status === 'pending' && e.hold_until ? when(e.hold_until) : '—') },
  ], items, { id: 'ledger', empty: 'No ledger entries yet.' });
}

const WITHDRAWAL_COLUMNS = [
  { label: 'Requested', value: (w) => when(w.created_at) }, { label: 'Amount', value: (w) => money(w.amount), class: 'num' },
  { label: 'Method', value: (w) => w.method }, { label: 'Status', value: (w) => w.status },
  { label: 'Processed', value: (w) => when(w.processed_at) }, { label: 'Note', value: (w) => w.failure_reason || '' },
];
const WITHDRAWALS_PAGE_SIZE = 20;
const withdrawalsPage = (cursor) => get(`/v1/withdrawals${query({ cursor, limit: WITHDRAWALS_PAGE_SIZE })}`);

function withdrawalsList(first) {
  const shown = table(WITHDRAWAL_COLUMNS, first.items, { id: 'withdrawals', empty: 'No withdrawals yet.' });
  return [shown, loadMore(first.next_cursor, withdrawalsPage, rowAdder(shown, WITHDRAWAL_COLUMNS),
    { label: 'Load more withdrawals', id: 'more-withdrawals' })];
}

// A supporter has no creator profile: its payout account is set on its own (PUT /v1/me/payout-account).
function payoutAccount() {
  return form({
    id: 'payout-account', submit: 'Save payout account',
    fields: [{ name: 'stripe_account_id', label: 'Stripe Connect account (payouts)', placeholder: 'acct_…', required: true }],
    onSubmit: async (values) => {
      const saved = await put('/v1/me/payout-account', values);
      toast(`Withdrawals are paid to ${saved.stripe_account_id}`);
    },
  }).el;
}

page({
  path: '/wallet', title: 'Wallet', roles: ['creator', 'supporter'], nav: { label: 'Wallet' },
  render: async ({ query: q, refresh }) => {
    const [wallet, ledger, withdrawals] = await Promise.all([
      get('/v1/wallet'), get(`/v1/wallet/ledger${query({ cursor: q.get('ledger_cursor'), limit: 50 })}`),
      withdrawalsPage()]);
    const { min_withdrawal: minimum, hold_days: holdDays } = session.state.config;
    const withdraw = form({
      id: 'withdraw', submit: 'Request withdrawal', resetOnSuccess: true,
      fields: [
        { name: 'amount', label: 'Amount (USD)', required: true, inputmode: 'decimal', help: `At least ${money(minimum)}.` },
        { name: 'method', label: 'Method', type: 'select', options: METHODS, value: 'ach', required: true },
      ],
      onSubmit: async (values) => {
        await post('/v1/withdrawals', values, { headers: { 'Idempotency-Key': crypto.randomUUID() } });
        toast('Withdrawal requested: the amount is reserved');
        refresh();
      },
    });
    return h('div', {}, h('h1', {}, 'Wallet'),
      section('Balances', dl([
        ['Pending', h('span', { id: 'pending-balance' }, money(wallet.pending_balance, wallet.currency))],
        ['Available', h('span', { id: 'available-balance' }, money(wallet.available_balance, wallet.currency))],
      ]), h('p', { class: 'muted' }, `New earnings are held ${holdDays} days (refunds are taken back in that time), then become available.`)),
      section('Withdraw', session.roles().has('creator')
        ? h('p', {}, 'Needs approved identity verification and a Stripe account on ', link('/account', 'your profile'), '.')
        : [h('p', {}, 'Your boost rewards are withdrawn like earnings: this needs approved identity verification and a Stripe account.'),
          payoutAccount()],
      withdraw.el),
      section('Withdrawals', withdrawalsList(withdrawals)),
      section('Ledger', ledgerTable(ledger.items),
        ledger.next_cursor ? link(`/wallet${query({ ledger_cursor: ledger.next_cursor })}`, 'Older entries →') : null));
  },
});
