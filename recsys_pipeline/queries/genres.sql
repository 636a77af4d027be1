-- description: Genres by number of ratings and mean rating (a movie counts once per genre)
SELECT genre, count(DISTINCT m.item_id) AS n_movies, count(*) AS n_ratings,
       round(avg(r.rating), 3) AS mean_rating
FROM clean_ratings r
JOIN (SELECT item_id, unnest(genres) AS genre FROM clean_movies) m USING (item_id)
GROUP BY genre
ORDER BY n_ratings DESC, genre;
