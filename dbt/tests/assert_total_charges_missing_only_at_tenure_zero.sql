{#-
    stg_telco_customers turns a missing total_charges into 0, which is only right for customers who
    have not been billed yet (tenure 0). Returns any customer that breaks that assumption.
-#}

select
    customer_id,
    tenure,
    total_charges
from {{ source('raw', 'telco_customers') }}
where total_charges is null
    and tenure <> 0
