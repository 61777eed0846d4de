select
    o.id as order_id,
    o.customer_id,
    cast(o.ordered_at as date) as ordered_at,
    o.status,
    o.amount
from {{ ref('raw_orders') }} as o
