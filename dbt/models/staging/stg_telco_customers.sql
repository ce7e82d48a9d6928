with

source as (

    select * from {{ source('raw', 'telco_customers') }}

),

renamed as (

    select

        ----------  ids
        cast(customer_id as varchar) as customer_id,

        ----------  label
        churn = 'Yes' as churned,

        ----------  demographics
        female = 1 as is_female,
        senior_citizen = 1 as is_senior_citizen,
        partner = 1 as has_partner,
        dependents = 1 as has_dependents,

        ----------  account
        cast(tenure as integer) as tenure_months,
        contract as contract_type,
        paperless_billing = 1 as has_paperless_billing,
        payment_method,

        ----------  services ('No phone service' / 'No internet service' kept as categories)
        phone_service = 1 as has_phone_service,
        multiple_lines,
        internet_service,
        online_security,
        online_backup,
        device_protection,
        tech_support,
        streaming_tv,
        streaming_movies,

        ----------  billing
        cast(monthly_charges as double precision) as monthly_charges,
        -- Null only for customers with tenure 0, who have not been billed yet: nothing charged is 0.
        -- tests/assert_total_charges_missing_only_at_tenure_zero.sql guards that assumption.
        cast(coalesce(total_charges, 0) as double precision) as total_charges,

        ----------  metadata
        _loaded_at as loaded_at

    from source

)

select * from renamed
