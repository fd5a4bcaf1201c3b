import type { Conversation, ScriptReply } from '../../agents/providers/scripted.js';

/**
 * What the scripted model does for each support agent: the same decisions a real model is
 * instructed to make, written out so the demo and tests run without an API key.
 */
const EMAIL = /[\w.+-]+@[\w-]+(?:\.[\w-]+)+/;
const ORDER = /ORD-\d{4}/i;
const CUSTOMER = /C-\d{4}/;

const wantsRefund = (text: string): boolean => /refund|charged|money back|invoice|billing|payment/i.test(text);

export function triage(c: Conversation): ScriptReply {
  const target = wantsRefund(c.lastUser) ? 'billing' : 'tech_support';
  return { calls: [{ name: `transfer_to_${target}`, args: { reason: `request is about ${target === 'billing' ? 'money' : 'a product problem'}` } }] };
}

export function billing(c: Conversation): ScriptReply {
  const email = EMAIL.exec(c.lastUser)?.[0];
  const orderId = ORDER.exec(c.lastUser)?.[0]?.toUpperCase();
  if (!email || !orderId) return 'Please give the e-mail address on your account and the order number (ORD-####).';
  if (!c.called('lookup_customer')) return { calls: [{ name: 'lookup_customer', args: { query: email } }] };
  const customer = c.result('lookup_customer') as { id?: string; name?: string } | undefined;
  if (!customer?.id) return `I could not find an account for ${email}.`;
  if (!c.called('lookup_order')) return { calls: [{ name: 'lookup_order', args: { orderId } }] };
  const order = c.result('lookup_order') as { id?: string; customerId?: string; amountCents?: number; item?: string } | undefined;
  if (!order?.id || order.customerId !== customer.id) return `Order ${orderId} is not on the account of ${customer.name}.`;
  if (!c.called('ask_fraud_check')) {
    return { calls: [{ name: 'ask_fraud_check', args: { input: `Refund risk for customer ${customer.id}, order ${order.id}, ${order.amountCents} cents?` } }] };
  }
  const verdict = String(c.result('ask_fraud_check') ?? '');
  if (!/risk: low/i.test(verdict)) return `Your refund for ${order.item} needs a manual review by our finance team (${verdict}).`;
  if (!c.called('issue_refund')) {
    return { calls: [{ name: 'issue_refund', args: { orderId: order.id, amountCents: order.amountCents, reason: 'customer request' } }] };
  }
  const refund = c.result('issue_refund') as { id?: string } | string;
  if (typeof refund !== 'object' || !refund.id) return `I could not issue the refund: ${String(refund)}`;
  const done = `Done: refund ${refund.id} of ${((order.amountCents ?? 0) / 100).toFixed(2)} for your ${order.item} is on its way`;
  if (/which card|what card/i.test(c.lastUser)) {
    if (!c.called('lookup_payment_method')) return { calls: [{ name: 'lookup_payment_method', args: { customerId: customer.id } }] };
    const card = c.result('lookup_payment_method') as { brand?: string; last4?: string; expiry?: string } | undefined;
    if (card?.last4) return `${done} to your ${card.brand} card ending ${card.last4} (expires ${card.expiry}).`;
  }
  return `${done}.`;
}

export function fraudCheck(c: Conversation): ScriptReply {
  const customerId = CUSTOMER.exec(c.lastUser)?.[0];
  if (!customerId) return 'risk: unknown (no customer id in the question)';
  if (!c.called('fraud_score')) return { calls: [{ name: 'fraud_score', args: { customerId } }] };
  const { score } = c.result('fraud_score') as { score: number };
  return `risk: ${score < 0.5 ? 'low' : 'high'} (score ${score.toFixed(2)})`;
}

export function techSupport(c: Conversation): ScriptReply {
  if (!c.called('search_kb')) return { calls: [{ name: 'search_kb', args: { query: c.lastUser.slice(0, 500) } }] };
  const hits = c.result('search_kb');
  if (Array.isArray(hits) && hits.length > 0) return `${hits[0].title}: ${hits[0].body}`;
  return 'I have opened a ticket with our technical team; they will reply by e-mail.';
}
