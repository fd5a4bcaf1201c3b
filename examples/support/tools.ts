import { z } from 'zod';
import { defineTool } from '../../agents/tool.js';
import type { SupportBackend } from './backend.js';

export function supportTools(backend: SupportBackend) {
  const lookupCustomer = defineTool({
    name: 'lookup_customer',
    description: 'Find a customer by e-mail address or customer id. Returns name, contact details and tier.',
    input: z.object({ query: z.string().min(3).describe('E-mail address or customer id such as C-1001') }),
    effect: 'read',
    returns: { level: 'confidential', categories: ['pii'] },
    requires: ['customers:read'],
    run: ({ query }) => backend.findCustomer(query) ?? { error: `no customer matches '${query}'` },
  });

  const lookupOrder = defineTool({
    name: 'lookup_order',
    description: 'Look up an order by id (ORD-####): item, amount in cents, status and customer id.',
    input: z.object({ orderId: z.string().regex(/^ORD-\d{4}$/i, 'order ids look like ORD-5001') }),
    effect: 'read',
    returns: { level: 'internal', categories: ['financial'] },
    requires: ['orders:read'],
    run: ({ orderId }) => backend.order(orderId) ?? { error: `no order ${orderId}` },
  });

  const issueRefund = defineTool({
    name: 'issue_refund',
    description: 'Refund an order, in full or in part. Only after the fraud check has answered.',
    input: z.object({
      orderId: z.string().regex(/^ORD-\d{4}$/i),
      amountCents: z.number().int().positive().max(10_000_000),
      reason: z.string().min(3).max(500),
    }),
    effect: 'write',
    risk: 'high',
    returns: { level: 'internal', categories: ['financial'] },
    requires: ['refunds:issue'],
    run: ({ orderId, amountCents, reason }, ctx) => backend.refund(orderId, amountCents, reason, ctx.idempotencyKey),
    compensate: (_args, refund) => backend.reverseRefund(refund.id),
  });

  const lookupPaymentMethod = defineTool({
    name: 'lookup_payment_method',
    description: "The card on file for a customer (brand, last four digits, expiry): where refunds go.",
    input: z.object({ customerId: z.string().regex(/^C-\d{4}$/) }),
    effect: 'read',
    // Card data: restricted, above what a reply to a customer may carry.
    returns: { level: 'restricted', categories: ['financial', 'pci'] },
    requires: ['payments:read'],
    run: ({ customerId }) => backend.paymentMethod(customerId) ?? { error: `no card on file for ${customerId}` },
  });

  const searchKb = defineTool({
    name: 'search_kb',
    description: 'Search the public help-centre articles.',
    input: z.object({ query: z.string().min(2).max(500) }),
    effect: 'read',
    returns: { level: 'public' },
    run: ({ query }) => {
      const hits = backend.searchKb(query);
      return hits.length > 0 ? hits : { error: 'no article matches' };
    },
  });

  const fraudScore = defineTool({
    name: 'fraud_score',
    description: "Score a customer's refund risk from 0 (none) to 1, from their recent refund history.",
    input: z.object({ customerId: z.string().regex(/^C-\d{4}$/) }),
    effect: 'read',
    returns: { level: 'internal', categories: ['financial'] },
    requires: ['fraud:read'],
    run: ({ customerId }) => backend.fraudScore(customerId),
  });

  return { lookupCustomer, lookupOrder, issueRefund, lookupPaymentMethod, searchKb, fraudScore };
}
