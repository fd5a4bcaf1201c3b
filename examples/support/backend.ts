/**
 * The systems the support agents act on: a customer database, orders and a payments ledger.
 * In-memory stand-ins for real services; each lives only in the worker process that owns the tools.
 */
export interface Customer {
  id: string;
  name: string;
  email: string;
  phone: string;
  tier: 'standard' | 'gold';
}

export interface Order {
  id: string;
  customerId: string;
  item: string;
  amountCents: number;
  status: 'delivered' | 'shipped' | 'refunded';
}

export interface Refund {
  id: string;
  orderId: string;
  amountCents: number;
  reason: string;
  reversed: boolean;
}

const CUSTOMERS: Customer[] = [
  { id: 'C-1001', name: 'Ada Lovelace', email: 'ada@example.com', phone: '+44 20 7946 0018', tier: 'gold' },
  { id: 'C-1002', name: 'Grace Hopper', email: 'grace@example.com', phone: '+1 202 555 0143', tier: 'standard' },
];

const ORDERS: Order[] = [
  { id: 'ORD-5001', customerId: 'C-1001', item: 'Noise-cancelling headphones', amountCents: 12_900, status: 'delivered' },
  { id: 'ORD-5002', customerId: 'C-1002', item: 'Mechanical keyboard', amountCents: 8_450, status: 'shipped' },
  { id: 'ORD-5003', customerId: 'C-1002', item: '4K monitor', amountCents: 129_900, status: 'delivered' },
  { id: 'ORD-5004', customerId: 'C-1001', item: 'Espresso machine', amountCents: 34_900, status: 'delivered' },
  { id: 'ORD-5005', customerId: 'C-1002', item: 'Standing desk', amountCents: 24_500, status: 'delivered' },
  { id: 'ORD-5006', customerId: 'C-1002', item: 'USB-C dock', amountCents: 7_900, status: 'delivered' },
];

/** Cards on file: payment-card data, the most sensitive thing these systems hold. */
const CARDS: Record<string, { brand: string; last4: string; expiry: string }> = {
  'C-1001': { brand: 'Visa', last4: '4242', expiry: '09/28' },
  'C-1002': { brand: 'Mastercard', last4: '5454', expiry: '03/27' },
};

const KB: Array<{ id: string; title: string; keywords: string[]; body: string }> = [
  { id: 'KB-1', title: 'Resetting your password', keywords: ['password', 'login', 'sign in', 'reset'], body: 'Use "Forgot password" on the sign-in page; the link in the e-mail is valid for 30 minutes.' },
  { id: 'KB-2', title: 'Headphones will not pair', keywords: ['bluetooth', 'pair', 'headphones', 'connect'], body: 'Hold the power button for 7 seconds until the light flashes blue, then pair again from your device.' },
  { id: 'KB-3', title: 'Shipping times', keywords: ['shipping', 'delivery', 'track', 'late'], body: 'Standard shipping takes 3-5 working days; the tracking link is in your order confirmation.' },
];

export class SupportBackend {
  readonly refunds: Refund[] = [];
  private readonly orders = new Map(ORDERS.map((o) => [o.id, { ...o }]));
  private readonly refundsByKey = new Map<string, Refund>();

  findCustomer(query: string): Customer | undefined {
    const q = query.trim().toLowerCase();
    return CUSTOMERS.find((c) => c.email === q || c.id.toLowerCase() === q);
  }

  order(id: string): Order | undefined {
    return this.orders.get(id.toUpperCase());
  }

  searchKb(query: string): Array<{ id: string; title: string; body: string }> {
    const q = query.toLowerCase();
    return KB.filter((a) => a.keywords.some((k) => q.includes(k))).map(({ id, title, body }) => ({ id, title, body }));
  }

  /** Deduplicates on the idempotency key, as a real payments API does. */
  refund(orderId: string, amountCents: number, reason: string, idempotencyKey: string): Refund {
    const existing = this.refundsByKey.get(idempotencyKey);
    if (existing) return existing;
    const order = this.order(orderId);
    if (!order) throw new Error(`no order ${orderId}`);
    if (order.status === 'refunded') throw new Error(`order ${orderId} was already refunded`);
    if (amountCents > order.amountCents) throw new Error(`refund of ${amountCents} exceeds the order total of ${order.amountCents}`);
    const refund: Refund = { id: `RF-${this.refunds.length + 7001}`, orderId: order.id, amountCents, reason, reversed: false };
    order.status = 'refunded';
    this.refunds.push(refund);
    this.refundsByKey.set(idempotencyKey, refund);
    return refund;
  }

  paymentMethod(customerId: string): { brand: string; last4: string; expiry: string } | undefined {
    return CARDS[customerId];
  }

  /** Refunds not reversed, for checks of what a run left behind. */
  activeRefunds(): Refund[] {
    return this.refunds.filter((r) => !r.reversed).map((r) => ({ ...r }));
  }

  reverseRefund(refundId: string): void {
    const refund = this.refunds.find((r) => r.id === refundId);
    if (!refund || refund.reversed) return;
    refund.reversed = true;
    const order = this.order(refund.orderId);
    if (order) order.status = 'delivered';
  }

  fraudScore(customerId: string): { customerId: string; score: number; refundsLast90Days: number } {
    const customer = CUSTOMERS.find((c) => c.id === customerId);
    const recent = this.refunds.filter((r) => !r.reversed && this.order(r.orderId)?.customerId === customerId).length;
    const base = customer?.tier === 'gold' ? 0.05 : 0.2;
    return { customerId, score: Math.min(1, base + recent * 0.3), refundsLast90Days: recent };
  }
}
