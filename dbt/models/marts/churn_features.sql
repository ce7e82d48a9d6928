{#-
    The training set for the churn model: one row per customer, the 0/1 label `churned`, and only
    numeric features. Flags are integer 0/1 so the table can be read straight into a feature matrix;
    'No phone service' / 'No internet service' count as 0 for the service they gate.
-#}

with

customers as (

    select * from {{ ref('stg_telco_customers') }}

),

features as (

    select

        ----------  id and label
        customer_id,
        cast(churned as integer) as churned,

        ----------  demographics
        cast(is_female as integer) as is_female,
        cast(is_senior_citizen as integer) as is_senior_citizen,
        cast(has_partner as integer) as has_partner,
        cast(has_dependents as integer) as has_dependents,

        ----------  account
        tenure_months,
        -- month-to-month is the baseline
        cast(contract_type = 'One year' as integer) as contract_one_year,
        cast(contract_type = 'Two year' as integer) as contract_two_year,
        cast(has_paperless_billing as integer) as has_paperless_billing,
        cast(payment_method = 'Electronic check' as integer) as payment_electronic_check,
        cast(payment_method = 'Mailed check' as integer) as payment_mailed_check,
        cast(payment_method = 'Bank transfer (automatic)' as integer) as payment_bank_transfer,
        cast(payment_method = 'Credit card (automatic)' as integer) as payment_credit_card,

        ----------  phone
        cast(has_phone_service as integer) as has_phone_service,
        cast(multiple_lines = 'Yes' as integer) as has_multiple_lines,

        ----------  internet
        cast(internet_service = 'DSL' as integer) as internet_dsl,
        cast(internet_service = 'Fiber optic' as integer) as internet_fiber_optic,
        cast(internet_service = 'No' as integer) as internet_none,
        cast(online_security = 'Yes' as integer) as has_online_security,
        cast(online_backup = 'Yes' as integer) as has_online_backup,
        cast(device_protection = 'Yes' as integer) as has_device_protection,
        cast(tech_support = 'Yes' as integer) as has_tech_support,
        cast(streaming_tv = 'Yes' as integer) as has_streaming_tv,
        cast(streaming_movies = 'Yes' as integer) as has_streaming_movies,

        ----------  billing
        monthly_charges,
        total_charges

    from customers

)

select * from features
